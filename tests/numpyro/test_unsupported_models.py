"""The NumPyro guide refuses what the PyTorch guide refuses, with the same messages:
local latents it would never infer, and quantile levels outside ``[0, 1]``."""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import pytest

from iai_prob.models import LinearRegression
from iai_prob.numpyro import IterativeAmortizedGuide

SMALL = {"encoder": "deep_sets", "encoder_options": {"embed_dim": 8, "hidden_dim": 16}}


def _with_local(site):
    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            local = site()
            return numpyro.sample("y", dist.Normal(w * x + local, 1.0), obs=y)

    return model


LOCAL_ROWS = {
    "continuous": (
        lambda: numpyro.sample("u", dist.Normal(0.0, 1.0)),
        ["local latent site 'u' (inside the data plate 'data') is continuous"],
    ),
    "discrete-not-enumerated": (
        lambda: numpyro.sample("c", dist.Bernoulli(0.5)),
        ["local latent site 'c'", "not enumerated", "infer={'enumerate': 'parallel'}"],
    ),
    "no-finite-support": (
        lambda: numpyro.sample("k", dist.Poisson(2.0), infer={"enumerate": "parallel"}),
        ["local latent site 'k'", "no finite support", "Poisson"],
    ),
}


@pytest.mark.parametrize("row", sorted(LOCAL_ROWS))
def test_local_latents_that_would_not_be_inferred_are_refused(row):
    site, patterns = LOCAL_ROWS[row]
    guide = IterativeAmortizedGuide(_with_local(site), num_steps=1, batch_size=4, **SMALL)
    x = jnp.linspace(-1.0, 1.0, 6)
    with pytest.raises(ValueError) as info:
        guide.init_params(x, 2 * x)
    assert all(pattern in str(info.value) for pattern in patterns), str(info.value)


@pytest.mark.parametrize("levels", [[0.5, 1.5], [-0.1], [float("nan")]])
def test_quantiles_outside_zero_one_are_refused(levels):
    guide = IterativeAmortizedGuide(LinearRegression(dim=2).on("numpyro"), **SMALL)
    x, y = jnp.zeros((5, 2)), jnp.zeros(5)
    with pytest.raises(ValueError, match=r"quantiles must lie in \[0, 1\]"):
        guide.quantiles({}, levels, x, y)  # refused before the (empty) params are read
