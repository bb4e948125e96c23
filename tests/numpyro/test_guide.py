"""The NumPyro guide inside NumPyro's own machinery: SVI, Predictive, ELBOs, PSIS.

The shipped linear-regression guide on one dataset of 150 points reuses the compiled
refinement across these tests (same shapes); the eager NumPyro code around it still
compiles many small XLA operations on first use (30–70 s per test on the shared 2-core
machine), hence the ``slow`` marks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import pytest
from numpyro.infer import SVI, Predictive, Trace_ELBO, TraceEnum_ELBO
from numpyro.infer.importance import psis_diagnostic

from iai_prob.models import GaussianMixture, LinearRegression
from iai_prob.numpyro import IterativeAmortizedGuide, pretrained

NUM_POINTS = 150


@pytest.fixture(scope="module")
def shipped():
    guide, params = pretrained.load("linear_regression")
    _, x, y = guide.family.sample(jax.random.PRNGKey(3), 1, NUM_POINTS)
    return guide, params, x[0], y[0]


@pytest.mark.slow
def test_trace_elbo_is_close_to_the_evidence(shipped):
    guide, params, x, y = shipped
    losses = [
        Trace_ELBO(num_particles=64).loss(jax.random.PRNGKey(k), params, guide.model, guide, x, y)
        for k in range(2)
    ]
    # −ELBO − (−log p(y)) = KL(q ‖ p(w | y)) ≥ 0; the shipped guide is within 0.1 nats
    gap = np.mean(losses) + float(guide.family.log_evidence(x, y))
    assert -0.2 < gap < 0.3, gap


@pytest.mark.slow
def test_predictive_draws_the_refined_posterior(shipped):
    guide, params, x, y = shipped
    predictive = Predictive(
        guide.model, guide=guide, params=params, num_samples=400, parallel=True, return_sites=["w"]
    )
    draws = predictive(jax.random.PRNGKey(0), x, y)
    assert draws["w"].shape == (400, 8)
    exact = guide.family.exact_posterior(x, y)
    standard_error = np.sqrt(np.diag(np.asarray(exact.covariance_matrix)) / 400)
    np.testing.assert_array_less(
        np.abs(draws["w"].mean(0) - np.asarray(exact.mean)), 5 * standard_error + 1e-3
    )
    # posterior predictive on new covariates from the guide's draws
    new_x = jax.random.normal(jax.random.PRNGKey(1), (5, 8))
    predictions = Predictive(guide.model, posterior_samples={"w": draws["w"]})(
        jax.random.PRNGKey(2), new_x
    )
    assert predictions["y"].shape == (400, 5)


@pytest.mark.slow
def test_psis_diagnostic_accepts_the_guide(shipped):
    guide, params, x, y = shipped
    khat = psis_diagnostic(
        jax.random.PRNGKey(0), params, guide.model, guide, x, y, num_particles=300
    )
    assert np.isfinite(khat) and khat < 0.7


@pytest.mark.slow
def test_guide_draws_constrained_sites_and_median(shipped):
    guide, params, x, y = shipped
    trace = numpyro.handlers.trace(
        numpyro.handlers.seed(numpyro.handlers.substitute(guide, data=params), 0)
    ).get_trace(x, y)
    assert trace["w"]["fn"].__class__.__name__ == "Delta"
    assert trace["_iai_latent"]["infer"]["is_auxiliary"]
    median = guide.median(params, x, y)
    quantiles = guide.quantiles(params, [0.1, 0.5, 0.9], x, y)
    np.testing.assert_allclose(quantiles["w"][1], median["w"], atol=1e-6)
    assert (quantiles["w"][0] < quantiles["w"][2]).all()


def test_bad_input_names_the_problem(shipped):
    guide, params, x, y = shipped
    with pytest.raises(ValueError, match="NaN or inf"):
        guide.posterior(params, x, y.at[0].set(jnp.nan))
    with pytest.raises(ValueError, match="params has no entry"):
        guide.posterior({}, x, y)
    with pytest.raises(ValueError, match="batch_size"):
        IterativeAmortizedGuide(guide.model, batch_size=0)
    with pytest.raises(ValueError, match="signals"):
        IterativeAmortizedGuide(guide.model, signals=("nope",))
    with pytest.raises(ValueError, match="max_relinearizations"):
        IterativeAmortizedGuide(guide.model, max_relinearizations=-1)
    direct = IterativeAmortizedGuide(guide.model, max_relinearizations=0)
    assert direct.build(2, 3).options.max_relinearizations == 0


SMALL = {"encoder": "deep_sets", "encoder_options": {"embed_dim": 8, "hidden_dim": 16}}


@pytest.mark.slow
@pytest.mark.heavy  # 70 s of one CI worker (2026-12-06); make test-all runs it
def test_svi_trains_a_fresh_guide_and_enum_elbo_marginalizes_the_mixture():
    family = LinearRegression(dim=2).on("numpyro")
    guide = IterativeAmortizedGuide(family, num_steps=1, batch_size=16, **SMALL)
    _, x, y = family.sample(jax.random.PRNGKey(0), 1, 32)
    svi = SVI(family.model, guide, optax.adam(1e-2), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(1), x[0], y[0])
    assert set(svi.get_params(state)) == {guide.param_name}
    state, loss = svi.update(state, x[0], y[0])
    state, loss = svi.update(state, x[0], y[0])
    assert np.isfinite(float(loss))
    before = jax.tree_util.tree_leaves(svi.get_params(svi.init(jax.random.PRNGKey(1), x[0], y[0])))
    after = jax.tree_util.tree_leaves(svi.get_params(state))
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))

    mixture = GaussianMixture(dim=2, num_components=2).on("numpyro")
    mixture_guide = IterativeAmortizedGuide(mixture, num_steps=1, batch_size=16, **SMALL)
    _, mx, my = mixture.sample(jax.random.PRNGKey(2), 1, 32)
    params = mixture_guide.init_params(mx[0], my[0])
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(
        jax.random.PRNGKey(3), params, mixture.model, mixture_guide, mx[0], my[0]
    )
    assert np.isfinite(float(loss))


@pytest.mark.slow  # two compilations of the refinement
def test_a_task_with_non_finite_curvature_keeps_its_state_alone(shipped, monkeypatch):
    """As in PyTorch: a non-finite curvature for one task (e.g. a mixture weight at 0)
    leaves that task's state unchanged for the step; the other tasks refine as without it."""
    from iai_prob.numpyro import refinement as refinement_module

    guide, params, *_ = shipped
    _, x, y = guide.family.sample(jax.random.PRNGKey(3), 3, 24)

    def first_step():
        states, _ = guide.refinement_trace(params, x, y, num_steps=1)
        return states[0], states[1]

    start, clean = first_step()
    original = refinement_module.curvature_signal

    def poisoned(*args, **kwargs):
        signal = original(*args, **kwargs)
        return signal._replace(hessian=signal.hessian.at[1].set(jnp.inf))

    monkeypatch.setattr(refinement_module, "curvature_signal", poisoned)
    jax.clear_caches()  # trace the refinement afresh, with the poisoned signal
    try:
        _, step = first_step()
    finally:
        jax.clear_caches()  # no later call may reuse the poisoned compilation
    np.testing.assert_allclose(step.loc[1], start.loc[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(step.precision[1], start.precision[1], rtol=1e-5)
    assert not np.allclose(clean.loc[1], start.loc[1])  # it would have moved
    for index in (0, 2):
        np.testing.assert_allclose(step.loc[index], clean.loc[index], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(step.precision[index], clean.precision[index], rtol=1e-5)


def test_a_guide_runs_a_pyro_bound_family_under_numpyro():
    """A family (or its model method) given to the NumPyro guide is bound to NumPyro: the
    guide traces a NumPyro model and reads NumPyro supports, whatever the caller built."""
    family = LinearRegression(dim=2)
    for given in (family, family.model):
        guide = IterativeAmortizedGuide(given, **SMALL)
        assert guide.family.backend == "numpyro" and guide.family.config() == family.config()
    _, x, y = guide.family.sample(jax.random.PRNGKey(0), 1, 12)
    task = guide.prepare(x[0], y[0])
    assert task.layout.signature() == [["w", [2]]]
    assert task.layout.sites[0].backend == "numpyro"
    assert family.backend == "pyro"  # the caller's family is left as it was


def _raw_units_model(x, y=None):
    a = numpyro.sample("a", numpyro.distributions.Normal(500.0, 100.0))
    sigma = numpyro.sample("sigma", numpyro.distributions.HalfNormal(10.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", numpyro.distributions.Normal(a + x, sigma), obs=y)


def test_an_untrained_guide_starts_at_the_prior():
    """As the PyTorch guide (``tests/inference/test_prior_standardization.py``): the
    normal prior's exact mean and sd, the half-normal's log by its draws' median."""
    x = jnp.linspace(-1.0, 1.0, 32)
    y = 500.0 + x
    guide = IterativeAmortizedGuide(_raw_units_model, num_steps=0, convergence=None)
    params = guide.init_params(x, y)
    state = guide.final_state(params, guide.prepare(x, y))
    np.testing.assert_allclose(np.asarray(state.loc)[0, 0], 500.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state.precision)[0, 0, 0], 1e-4, rtol=1e-5)
    assert abs(float(state.loc[0, 1]) - np.log(10.0 * 0.6745)) < 0.05
    plain = IterativeAmortizedGuide(
        _raw_units_model, num_steps=0, convergence=None, standardize=False
    )
    plain_state = plain.final_state(plain.init_params(x, y), plain.prepare(x, y))
    np.testing.assert_allclose(np.asarray(plain_state.loc), np.zeros((1, 2)))


def _any_dim_regression(x, y=None):
    w = numpyro.sample(
        "w", numpyro.distributions.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1)
    )
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", numpyro.distributions.Normal((x * w).sum(-1), 0.5), obs=y)


def test_data_of_another_layout_is_refused_saying_how_it_differs():
    """As the PyTorch guide (one check for both): the message names the site whose shape
    changed, not only the two signatures."""
    guide = IterativeAmortizedGuide(_any_dim_regression, num_steps=0, convergence=None)
    guide.init_params(jnp.ones((8, 2)), jnp.ones(8))
    assert guide.layout_signature == [["w", [2]]]
    with pytest.raises(ValueError, match=r"site 'w' has shape \[3\], expected \[2\]"):
        guide.prepare(jnp.ones((8, 3)), jnp.ones(8))
