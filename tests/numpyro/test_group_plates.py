"""Global latents inside a group plate under NumPyro: the hierarchical model of
``tests/inference/test_group_plates.py`` written for NumPyro, read by the same shared
layout (:mod:`iai_prob.latent_layout`): the exact posterior from an untrained guide, and
the guide's draws in the model's plate with each group's log-Jacobian."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer import Predictive
from pyroapi import pyro_backend

from iai_prob.numpyro import IterativeAmortizedGuide
from iai_prob.numpyro.posteriors import gaussian_kl
from tests.inference import test_group_plates as group_plates
from tests.inference.test_group_plates import GROUPS, INDEX, exact_posterior, simulated_y

GROUP = jnp.asarray(INDEX.numpy())


def _under_numpyro(model):
    """``model`` (written with pyro-api) run by NumPyro."""

    def run(*args, **kwargs):
        with pyro_backend("numpy"):
            return model(*args, **kwargs)

    return run


hierarchical = _under_numpyro(group_plates.hierarchical)
hierarchical_scales = _under_numpyro(group_plates.hierarchical_scales)


def test_the_default_reaches_the_exact_posterior_of_group_effects():
    y = simulated_y(1)[0].numpy()
    guide = IterativeAmortizedGuide(hierarchical)
    params = guide.init_params(GROUP, jnp.asarray(y))
    posterior = guide.posterior(params, GROUP, jnp.asarray(y))
    assert guide.layout_signature == [["mu", []], ["a", [GROUPS]]]
    mean, precision = (jnp.asarray(array.numpy()) for array in exact_posterior(y))
    with jax.enable_x64(True):
        kl = gaussian_kl(
            jnp.asarray(posterior.mean, jnp.float64),
            jnp.asarray(posterior.precision_matrix, jnp.float64),
            mean,
            precision,
        )
    assert float(kl) <= 0.05


def test_predictive_draws_group_effects_in_the_models_plate():
    y = jnp.asarray(simulated_y(1, seed=2)[0].numpy(), jnp.float32)
    guide = IterativeAmortizedGuide(hierarchical)
    params = guide.init_params(GROUP, y)
    predictive = Predictive(
        hierarchical, guide=guide, params=params, num_samples=2000, return_sites=["a"]
    )
    draws = predictive(jax.random.PRNGKey(0), GROUP, y)["a"]
    assert draws.shape == (2000, GROUPS)
    mean, _ = exact_posterior(np.asarray(y, np.float64))
    np.testing.assert_allclose(np.asarray(draws).mean(0), mean.numpy()[1:], atol=0.06)


# five rows per group give each scale a skewed posterior: the library says so (k̂ > 0.7)
@pytest.mark.filterwarnings("ignore::iai_prob.posterior_status.PosteriorWarning")
def test_a_constrained_group_site_carries_each_groups_jacobian():
    y = jnp.asarray(simulated_y(1, seed=3)[0].numpy(), jnp.float32)
    guide = IterativeAmortizedGuide(hierarchical_scales)
    params = guide.init_params(GROUP, y)
    seeded = handlers.seed(handlers.substitute(guide, data=params), rng_seed=0)
    trace = handlers.trace(seeded).get_trace(GROUP, y)
    latent = trace[f"_{guide.prefix}_latent"]["value"]
    scale = trace["scale"]
    assert [frame.name for frame in scale["cond_indep_stack"]] == ["groups"]
    np.testing.assert_allclose(scale["value"], jnp.exp(latent[1:]), rtol=1e-6)
    log_density = scale["fn"].log_prob(scale["value"])
    np.testing.assert_allclose(log_density, -latent[1:], rtol=1e-6)
