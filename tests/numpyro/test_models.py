"""Every task family run under NumPyro against the same family run under Pyro.

* the same names, configs, latent sites, site names and plates (so one checkpoint serves
  both backends);
* the same log joint on the same values (rtol 1e-5, float32), the same exact posterior
  and evidence for the conjugate families;
* the JAX simulator and the NumPyro model define the same prior predictive (moment
  z-scores, as in ``tests/models``), and the check fails for a perturbed model;
* sample shapes and supports, seeded reproducibility, batched and single traces;
* bad arguments and bad data raise ``ValueError`` naming the culprit.

The configurations and perturbations are the PyTorch family tests' tables.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from numpyro import handlers
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from iai_prob import models
from iai_prob.models import DATA_PLATE, TASKS_PLATE, GenerativeTaskFamily
from iai_prob.models.numpyro_distributions import BernoulliLogits
from tests.models.conftest import BAD_ARGUMENTS, FAMILY_CONFIGS, PERTURBATIONS

FAMILY_NAMES = sorted(models.FAMILIES)
CONJUGATE_NAMES = [name for name in FAMILY_NAMES if models.FAMILIES[name].has_exact_posterior]
GENERATIVE_NAMES = [
    name for name in FAMILY_NAMES if issubclass(models.FAMILIES[name], GenerativeTaskFamily)
]


def _numpyro_family(name, **config):
    return models.get_family(name, **config).on("numpyro")


MOMENT_TASKS = 20_000
MAX_Z = 5.0


def _pair(name, **overrides):
    """The family ``name`` under NumPyro and under Pyro, in the tests' configuration."""
    config = {**FAMILY_CONFIGS[name], **overrides}
    return _numpyro_family(name, **config), models.get_family(name, **config)


def _torch_data(family, num_tasks, num_points, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return family.sample(num_tasks, num_points, generator=generator)


def _torch_trace(family, x, y, theta, batched):
    conditioned = {
        site.name: theta[site.name].unsqueeze(-len(site.shape) - 1) if batched else theta[site.name]
        for site in family.latent_sites
    }
    trace = poutine.trace(poutine.condition(family.model, data=conditioned)).get_trace(x, y)
    trace.compute_log_prob()
    return {
        name: node
        for name, node in trace.nodes.items()
        if node["type"] == "sample" and not site_is_subsample(node)
    }


def _jax_trace(family, x, y, values):
    model = handlers.condition(family.model, data=values)
    trace = handlers.trace(handlers.seed(model, rng_seed=0)).get_trace(x, y)
    return {name: site for name, site in trace.items() if site["type"] == "sample"}


def _plates(frames):
    return {frame.name: (frame.dim, frame.size) for frame in frames}


def test_a_family_is_bound_to_one_backend_at_a_time():
    family = models.get_family("linear_regression", dim=2)
    bound = family.on("numpyro")
    assert (family.backend, bound.backend) == ("pyro", "numpyro")
    assert bound.config() == family.config() and bound.on("numpyro") is bound
    assert type(bound.latent_sites[0].support).__module__.startswith("numpyro")
    assert type(family.latent_sites[0].support).__module__.startswith("torch")
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        family.on("jax")
    with pytest.raises(ValueError, match="unknown task family 'nope'"):
        models.get_family("nope")


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "single"])
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_log_joint_sites_and_plates_match_pytorch(name, batched):
    family, torch_family = _pair(name)
    assert family.config() == torch_family.config()
    assert [(s.name, s.shape) for s in family.latent_sites] == [
        (s.name, s.shape) for s in torch_family.latent_sites
    ]
    theta, x, y = _torch_data(torch_family, 3, 5)
    if not batched:
        theta, x, y = {k: v[0] for k, v in theta.items()}, x[0], y[0]
    expected = _torch_trace(torch_family, x, y, theta, batched)
    # condition NumPyro on every latent value of the Pyro trace (mixture assignments too)
    values = {n: jnp.asarray(s["value"].numpy()) for n, s in expected.items() if n != "y"}
    found = _jax_trace(family, jnp.asarray(x.numpy()), jnp.asarray(y.numpy()), values)
    assert list(found) == list(expected)
    for site_name, site in found.items():
        reference = expected[site_name]
        assert tuple(site["value"].shape) == tuple(reference["value"].shape), site_name
        assert _plates(site["cond_indep_stack"]) == _plates(reference["cond_indep_stack"])
        log_prob = np.asarray(site["fn"].log_prob(site["value"]))
        np.testing.assert_allclose(
            log_prob.sum(), reference["log_prob"].sum().item(), rtol=1e-5, atol=1e-5
        )
    assert found["y"]["is_observed"]
    assert DATA_PLATE in _plates(found["y"]["cond_indep_stack"])
    assert (TASKS_PLATE in _plates(found["y"]["cond_indep_stack"])) == batched


@pytest.mark.parametrize("name", CONJUGATE_NAMES)
def test_exact_posterior_and_evidence_match_pytorch(name):
    family, torch_family = _pair(name)
    theta, x, y = _torch_data(torch_family, 4, 7, seed=2)
    jx, jy = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
    value = torch_family.flatten_latents(theta)
    posterior, expected = family.exact_posterior(jx, jy), torch_family.exact_posterior(x, y)
    assert posterior.batch_shape == tuple(expected.batch_shape)
    assert posterior.event_shape == tuple(expected.event_shape)
    if name == "beta_bernoulli":  # event (1,) over the scalar site
        value = value.reshape(4, 1)
    np.testing.assert_allclose(
        np.asarray(posterior.log_prob(jnp.asarray(value.numpy()))),
        expected.log_prob(value).numpy(),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        np.asarray(posterior.mean), expected.mean.numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(family.log_evidence(jx, jy)),
        torch_family.log_evidence(x, y).numpy(),
        rtol=1e-5,
        atol=1e-5,
    )


def test_normal_inverse_gamma_draws_have_its_moments():
    family, _ = _pair("linear_regression_unknown_noise")
    _, x, y = family.sample(jax.random.PRNGKey(0), 1, 30)
    posterior = family.exact_posterior(x[0], y[0])
    draws = np.asarray(posterior.sample(jax.random.PRNGKey(1), (40_000,)))
    assert np.isfinite(np.asarray(posterior.log_prob(draws))).all()
    mean, variance = np.asarray(posterior.mean), np.asarray(posterior.variance)
    z = np.abs(draws.mean(0) - mean) / np.sqrt(variance / draws.shape[0])
    assert z.max() < MAX_Z, z
    np.testing.assert_allclose(draws.var(0), variance, rtol=0.1)


def _features(family, theta, y):
    """Per-task statistics whose means are the first two moments of θ and y."""
    flat = np.asarray(family.flatten_latents(theta), dtype=np.float64)
    obs = np.asarray(y, dtype=np.float64).reshape(*y.shape[:2], -1)
    mean = obs.mean(1)
    return np.concatenate([flat, flat**2, mean, (obs**2).mean(1), mean**2, obs.var(1)], -1)


def _prior_predictive_z(simulator, model_family, num_points=8):
    theta, x, y = simulator.sample(jax.random.PRNGKey(1), MOMENT_TASKS, num_points)
    trace = _jax_trace(model_family, x, None, {})
    drawn = {s.name: trace[s.name]["value"][:, 0] for s in model_family.latent_sites}
    a, b = _features(simulator, theta, y), _features(model_family, drawn, trace["y"]["value"])
    se = np.sqrt(a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).clip(1e-12)
    return float((np.abs(a.mean(0) - b.mean(0)) / se).max())


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_simulator_matches_the_model_and_the_check_has_power(name):
    family, _ = _pair(name)
    perturbed, _ = _pair(name, **PERTURBATIONS[name])
    assert _prior_predictive_z(family, family) < MAX_Z
    assert _prior_predictive_z(family, perturbed) > 2 * MAX_Z


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_sample_shapes_supports_and_seeds(name):
    family, _ = _pair(name)
    theta, x, y = family.sample(jax.random.PRNGKey(3), 3, 5)
    assert list(theta) == [site.name for site in family.latent_sites]
    assert x.shape[:2] == (3, 5) and y.shape[:2] == (3, 5)
    for site in family.latent_sites:
        assert theta[site.name].shape == (3, *site.shape)
        assert bool(jnp.all(site.support(theta[site.name]))), site.name
    assert family.flatten_latents(theta).shape == (3, family.latent_dim)
    trace = _jax_trace(family, x, y, {s.name: theta[s.name][:, None] for s in family.latent_sites})
    assert bool(jnp.isfinite(trace["y"]["fn"].log_prob(y)).all())
    again = family.sample(jax.random.PRNGKey(3), 3, 5)
    other = family.sample(jax.random.PRNGKey(4), 3, 5)
    np.testing.assert_array_equal(np.asarray(again[2]), np.asarray(y))
    assert not np.array_equal(np.asarray(other[2]), np.asarray(y))


def test_bad_arguments_name_the_culprit():
    for name in FAMILY_NAMES:
        for kwargs in BAD_ARGUMENTS[name]:
            (argument,) = kwargs
            with pytest.raises(ValueError, match=argument):
                _numpyro_family(name, **{**FAMILY_CONFIGS[name], **kwargs})


@pytest.mark.parametrize("name", GENERATIVE_NAMES)
def test_generative_families_check_their_data(name):
    family, _ = _pair(name)
    _, x, y = family.sample(jax.random.PRNGKey(0), 2, 4)
    with pytest.raises(ValueError, match="has no covariates"):
        family.model(jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="needs x"):
        family.model()
    with pytest.raises(ValueError, match="does not match"):
        family.model(x[:, :3], y)
    trace = _jax_trace(family, None, y, {})  # N and T from y alone
    assert trace["y"]["value"].shape == y.shape


def test_exact_references_reject_values_outside_the_support():
    coin, _ = _pair("beta_bernoulli")
    with pytest.raises(ValueError, match=r"values in \{0, 1\}"):
        coin.exact_posterior(None, jnp.array([0.0, 2.0]))
    dice, _ = _pair("dirichlet_categorical")
    with pytest.raises(ValueError, match=r"integer y in \[0, 3\)"):
        dice.log_evidence(None, jnp.array([0, 3]))
    with pytest.raises(ValueError, match="need observations y"):
        dice.exact_posterior(jnp.zeros((2, 0)), None)
    regression, _ = _pair("linear_regression_unknown_noise")
    with pytest.raises(ValueError, match="expects x of shape"):
        regression.exact_posterior(jnp.ones((5, 3)), jnp.ones(5))


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_bernoulli_logits_is_exact_and_has_the_right_gradient_at_zero(value):
    logits = jnp.array([-100.0, -3.0, 0.0, 3.0, 100.0])
    expected = torch.distributions.Bernoulli(logits=torch.tensor(np.asarray(logits)))
    found = BernoulliLogits(logits).log_prob(jnp.full(5, value))
    np.testing.assert_allclose(
        np.asarray(found), expected.log_prob(torch.full((5,), value)).numpy(), rtol=1e-6, atol=1e-30
    )
    # d/dl log p(y | l) = y − σ(l): ±½ at l = 0 (NumPyro's own Bernoulli gives 1 − y there)
    gradient = jax.grad(lambda logit: BernoulliLogits(logit).log_prob(value))(0.0)
    assert float(gradient) == pytest.approx(value - 0.5)
