"""``numpyro.infer.calibration.vsbc_diagnostic`` with the amortized guide.

VSBC (Yao, Vehtari, Simpson, Gelman 2018) draws ``(θ*, D) ~ p(θ) p(D | θ)``, runs SVI from
the guide's initial parameters on each ``D``, and tests whether
``p = Pr_q(θ < θ*)`` is symmetric around ½ (two-sample KS of ``p`` against ``1 − p``).
The guide's parameters are the pretrained network: passing
``numpyro.handlers.substitute(guide, data=params)`` makes them SVI's starting values (SVI's
own substitution sits outside and wins during the steps), and ``optax.sgd(0.0)`` keeps
them, so the diagnostic checks the amortized posterior itself.

On 30 simulated datasets of 16 points the shipped linear-regression guide (KL to the exact
posterior about 0.02 nats) is calibrated, and the same network refining under a prior that
is shifted to N(2, 0.3²) (a deliberately biased posterior) is flagged. Each call compiles
SVI around the refinement scan (about a minute on the shared 2-core machine). The
Gaussian mixture is out of reach: NumPyro refuses its discrete (enumerated) latents.
"""

from __future__ import annotations

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.handlers import substitute
from numpyro.infer import Trace_ELBO, TraceEnum_ELBO
from numpyro.infer.calibration import vsbc_diagnostic

from iai_prob.numpyro import IterativeAmortizedGuide, pretrained

NUM_POINTS = 16


def _vsbc(guide, params, model):
    x = jax.random.normal(jax.random.PRNGKey(0), (NUM_POINTS, 8))
    return vsbc_diagnostic(
        jax.random.PRNGKey(1),
        model,
        substitute(guide, data=params),  # start SVI from the pretrained network
        optax.sgd(0.0),  # and stay there: the amortized posterior as it is
        Trace_ELBO(),
        x,
        observed_sites=["y"],
        num_simulations=30,
        num_svi_steps=1,
        num_samples=200,
    )


@pytest.fixture(scope="module")
def shipped():
    return pretrained.load("linear_regression")


@pytest.mark.slow
def test_the_shipped_guide_is_vsbc_calibrated(shipped):
    guide, params = shipped
    result = _vsbc(guide, params, guide.model)
    assert result.probabilities["w"].shape == (30, 8)
    pvalues = np.asarray(result.ks_pvalues["w"])
    assert pvalues.min() > 0.05, pvalues  # measured: 0.20 to 0.99


def _shifted_prior_model(x, y=None):
    """The linear-regression model with the prior N(2, 0.3²) instead of N(0, 1)."""
    w = numpyro.sample("w", dist.Normal(2.0, 0.3).expand([8]).to_event(1))
    with numpyro.plate("data", x.shape[0], dim=-1):
        return numpyro.sample("y", dist.Normal((x * w).sum(-1), 0.5), obs=y)


@pytest.mark.slow
def test_a_guide_refining_under_a_wrong_prior_is_flagged(shipped):
    guide, params = shipped
    # the same network, refining against the shifted model's log joint: its posteriors
    # are pulled towards w = 2 while the data come from the N(0, 1) prior
    biased = IterativeAmortizedGuide(_shifted_prior_model, **guide.config)
    result = _vsbc(biased, params, guide.model)
    pvalues = np.asarray(result.ks_pvalues["w"])
    # measured: six of the eight coordinates below 1e-12, the others 2e-4 and 0.055
    assert np.median(pvalues) < 1e-6 and pvalues.max() < 0.1, pvalues
    # the draws overshoot θ*: Pr_q(θ < θ*) is small on average
    assert np.asarray(result.probabilities["w"]).mean() < 0.3


def test_the_mixture_is_out_of_vsbc_reach_because_of_its_discrete_assignments():
    """VSBC compares draws with every latent site of the model, the enumerated local
    assignments included, and NumPyro refuses discrete latents before running SVI."""
    guide, params = pretrained.load("gaussian_mixture")
    x = guide.family.sample(jax.random.PRNGKey(0), 1, NUM_POINTS)[1][0]
    with pytest.raises(ValueError, match=r"only continuous latent.*\['assignment'\]"):
        vsbc_diagnostic(
            jax.random.PRNGKey(1),
            guide.family.model,
            substitute(guide, data=params),
            optax.sgd(0.0),
            TraceEnum_ELBO(),
            x,
            observed_sites=["y"],
            num_simulations=4,
            num_svi_steps=1,
            num_samples=10,
        )
