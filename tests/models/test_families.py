"""Tests of the task families, parametrized over every family (see ``conftest.py``).

* the vectorized simulator and the Pyro model define the same prior predictive;
* shapes of ``sample``, of the model's sites and plates, batched and unbatched;
* for conjugate families, the exact posterior and evidence satisfy Bayes' rule,
  agree with NUTS and with a brute-force prior Monte Carlo estimate;
* the Gaussian mixture enumerates its assignments exactly under TraceEnum_ELBO;
* bad arguments and bad data shapes raise ``ValueError`` naming the culprit.
"""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, TraceEnum_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.ops.stats import effective_sample_size
from pyro.poutine.util import site_is_subsample
from pyro.util import check_site_shape

from iai_prob.models import DATA_PLATE, TASKS_PLATE, get_family
from iai_prob.models.pyro_distributions import NormalInverseGamma

# Prior-predictive moment checks: this many tasks, and the largest z-score of a
# difference of moments that still counts as agreement (about 50 moments each).
MOMENT_TASKS = 20_000
MAX_Z = 5.0


# ---------------------------------------------------------------------- helpers
def simulate(family, num_tasks, num_points, seed=0, dtype=None):
    """``family.sample`` with a seeded generator, optionally cast to a float ``dtype``."""
    theta, x, y = family.sample(
        num_tasks, num_points, generator=torch.Generator().manual_seed(seed)
    )
    if dtype is not None:
        theta = {name: value.to(dtype) for name, value in theta.items()}
        x = x.to(dtype)
        y = y.to(dtype) if y.is_floating_point() else y
    return theta, x, y


def trace_model(family, x, y=None, theta=None):
    """Trace ``family.model(x, y)``, conditioned on ``theta`` (values ``(T, *shape)``) if given."""
    model = family.model
    if theta is not None:
        batched = {
            site.name: theta[site.name].unsqueeze(-len(site.shape) - 1)
            for site in family.latent_sites
        }
        model = poutine.condition(model, data=batched)
    return poutine.trace(model).get_trace(x, y)


def latent_values(family, trace, batched=True):
    """The latent values of a model trace, as ``(T, *shape)`` (batched) or ``shape``."""
    values = {}
    for site in family.latent_sites:
        value = trace.nodes[site.name]["value"]
        values[site.name] = value.squeeze(-len(site.shape) - 1) if batched else value
    return values


def sample_sites(trace):
    """The sample sites of ``trace``, without the plates' subsample sites."""
    return {
        name: node
        for name, node in trace.nodes.items()
        if node["type"] == "sample" and not site_is_subsample(node)
    }


def plates_of(node):
    return {frame.name: (frame.dim, frame.size) for frame in node["cond_indep_stack"]}


def task_features(family, theta, y):
    """Per-task statistics ``(T, F)`` whose means are the first two moments of θ and y.

    Columns: each flattened latent and its square; the task mean of y, of y²,
    the square of the task mean (within-task dependence) and the within-task variance.
    """
    flat = family.flatten_latents(theta).double()
    obs = y.reshape(*y.shape[:2], -1).double()
    task_mean = obs.mean(1)
    return torch.cat([flat, flat**2, task_mean, (obs**2).mean(1), task_mean**2, obs.var(1)], dim=-1)


def max_z_score(a, b):
    """Largest ``|mean(a) − mean(b)| / standard error`` over the columns of ``a`` and ``b``."""
    se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt().clamp_min(1e-12)
    return ((a.mean(0) - b.mean(0)).abs() / se).max().item()


def prior_predictive_z(simulator_family, model_family, num_points=8):
    """Compare ``simulator_family.sample`` with ``model_family.model`` run batched."""
    theta, x, y = simulate(simulator_family, MOMENT_TASKS, num_points, seed=1)
    trace = trace_model(model_family, x)  # latents and y drawn by the model, same x
    model_features = task_features(
        model_family, latent_values(model_family, trace), trace.nodes["y"]["value"]
    )
    return max_z_score(task_features(simulator_family, theta, y), model_features)


def per_task_log_joint(family, x, y, theta):
    """``log p(θ_t, y_t | x_t)`` for each task, from the Pyro model: shape ``(T,)``."""
    trace = trace_model(family, x, y, theta)
    trace.compute_log_prob()
    return sum(node["log_prob"].sum(-1) for node in sample_sites(trace).values())


def chain_moment_z_scores(samples, mean, cov):
    """z-scores of a Markov chain's mean and covariance against exact ``mean`` and ``cov``.

    The covariance is estimated as the chain average of ``(θ − mean)(θ − mean)ᵀ``, whose
    Monte Carlo standard error is that product's std over √ESS (ESS per entry), so a
    posterior variance off by a factor of 2 gives z ≈ √(ESS/2) ≈ 9 for ESS ≈ 150.
    """
    num_samples, dim = samples.shape
    ess = effective_sample_size(samples.unsqueeze(0))
    mean_z = (samples.mean(0) - mean).abs() / (samples.std(0) / ess.sqrt())
    centered = samples - mean
    products = (centered.unsqueeze(-1) * centered.unsqueeze(-2)).reshape(num_samples, -1)
    products_ess = effective_sample_size(products.unsqueeze(0))
    se = products.std(0) / products_ess.sqrt()
    cov_z = (products.mean(0) - cov.reshape(-1)).abs() / se
    return mean_z, cov_z.reshape(dim, dim)


# ----------------------------------------------------- simulator versus model
def test_simulator_matches_model_prior_predictive(family):
    assert prior_predictive_z(family, family) < MAX_Z


def test_moment_check_detects_a_perturbed_model(family, perturbed_family):
    # The check above is only worth something if it fails for a slightly wrong model,
    # e.g. one whose noise scale is doubled (PERTURBATIONS in conftest.py).
    assert prior_predictive_z(family, perturbed_family) > 2 * MAX_Z


# ----------------------------------------------------------------------- shapes
@pytest.mark.parametrize(("num_tasks", "num_points"), [(3, 5), (1, 1)])
def test_sample_shapes_supports_and_flattening(family, num_tasks, num_points):
    theta, x, y = simulate(family, num_tasks, num_points)
    assert list(theta) == [site.name for site in family.latent_sites]
    assert x.shape[:2] == (num_tasks, num_points)
    assert y.shape[:2] == (num_tasks, num_points)
    for site in family.latent_sites:
        assert theta[site.name].shape == (num_tasks, *site.shape)
        assert site.support.check(theta[site.name]).all(), site.name

    assert family.latent_dim == sum(math.prod(site.shape) for site in family.latent_sites)
    flat = family.flatten_latents(theta)
    assert flat.shape == (num_tasks, family.latent_dim)
    blocks = flat.split([site.numel for site in family.latent_sites], dim=-1)
    for site, block in zip(family.latent_sites, blocks, strict=True):
        torch.testing.assert_close(block, theta[site.name].reshape(num_tasks, -1))

    # the simulated observations lie in the support of the model's likelihood
    trace = trace_model(family, x, y, theta)
    trace.compute_log_prob()
    assert torch.isfinite(trace.nodes["y"]["log_prob"]).all()


def test_sample_is_reproducible_with_a_generator(family):
    first = simulate(family, 4, 6, seed=3)
    again = simulate(family, 4, 6, seed=3)
    other = simulate(family, 4, 6, seed=4)
    for a, b in zip(first[1:], again[1:], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(family.flatten_latents(first[0]), family.flatten_latents(again[0]))
    assert not torch.equal(family.flatten_latents(first[0]), family.flatten_latents(other[0]))


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "single"])
def test_model_trace_shapes(family, batched):
    num_tasks, num_points = 3, 5
    _, x, y = simulate(family, num_tasks, num_points)
    if not batched:
        x, y = x[0], y[0]
    trace = trace_model(family, x, y)
    tasks = {TASKS_PLATE: (-2, num_tasks)} if batched else {}
    for site in family.latent_sites:
        node = trace.nodes[site.name]
        expected = (num_tasks, 1, *site.shape) if batched else site.shape
        assert node["value"].shape == expected, site.name
        assert plates_of(node) == tasks, site.name
        assert not node["is_observed"]
    assert trace.nodes["y"]["is_observed"]
    assert torch.equal(trace.nodes["y"]["value"], y)
    assert torch.equal(trace.nodes["_RETURN"]["value"], y)
    assert DATA_PLATE in plates_of(trace.nodes["y"])
    assert plates_of(trace.nodes["y"])[DATA_PLATE] == (-1, num_points)

    flat = family.flatten_latents(latent_values(family, trace, batched))
    assert flat.shape == ((num_tasks,) if batched else ()) + (family.latent_dim,)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "single"])
def test_local_sites_pass_pyro_shape_checks(family, batched):
    """Sites in the data plate sit in the tasks plate too, as ELBOs and MCMC require."""
    num_tasks, num_points = 3, 5
    _, x, y = simulate(family, num_tasks, num_points)
    if not batched:
        x, y = x[0], y[0]
    trace = trace_model(family, x, y)
    trace.compute_log_prob()
    tasks = {TASKS_PLATE: (-2, num_tasks)} if batched else {}
    latent_names = {site.name for site in family.latent_sites}
    for name, node in sample_sites(trace).items():
        check_site_shape(node, max_plate_nesting=2)
        if name not in latent_names:
            assert plates_of(node) == {DATA_PLATE: (-1, num_points), **tasks}, name


def test_generative_model_takes_points_from_x_or_y(generative_family):
    family = generative_family
    _, x, y = simulate(family, 3, 5)
    assert x.shape == (3, 5, 0)
    cases = [(x, None, y), (None, y, y), (x, y, y)]
    cases += [(x[0], None, y[0]), (None, y[0], y[0]), (x[0], y[0], y[0])]
    for x_arg, y_arg, like in cases:
        sampled = family.model(x_arg, y_arg)
        assert sampled.shape == like.shape
        assert sampled.dtype == like.dtype
    with pytest.raises(ValueError, match="needs x"):
        family.model()
    with pytest.raises(ValueError, match="shape"):
        family.model(torch.zeros(5, 1))
    with pytest.raises(ValueError, match="shape"):
        family.model(x, y[:, :-1])


# ----------------------------------------------------- exact posterior, evidence
def test_exact_posterior_satisfies_bayes_rule(conjugate_family):
    """``log p(θ | y) = log p(θ, y) − log p(y)`` for θ away from the data's own θ."""
    family = conjugate_family
    _, x, y = simulate(family, 4, 6, seed=1, dtype=torch.float64)
    theta, _, _ = simulate(family, 4, 6, seed=2, dtype=torch.float64)
    posterior = family.exact_posterior(x, y)
    assert posterior.batch_shape == (4,)
    assert posterior.event_shape == (family.latent_dim,)
    log_posterior = posterior.log_prob(family.flatten_latents(theta))
    expected = per_task_log_joint(family, x, y, theta) - family.log_evidence(x, y)
    torch.testing.assert_close(log_posterior, expected, rtol=0, atol=1e-6)


def test_exact_references_batched_match_single_tasks(conjugate_family):
    family = conjugate_family
    theta, x, y = simulate(family, 3, 5)
    flat = family.flatten_latents(theta)
    posterior = family.exact_posterior(x, y)
    evidence = family.log_evidence(x, y)
    assert evidence.shape == (3,)
    for task in range(3):
        single = family.exact_posterior(x[task], y[task])
        assert single.batch_shape == ()
        assert single.event_shape == (family.latent_dim,)
        torch.testing.assert_close(single.log_prob(flat[task]), posterior.log_prob(flat)[task])
        torch.testing.assert_close(single.mean, posterior.mean[task])
        torch.testing.assert_close(family.log_evidence(x[task], y[task]), evidence[task])


def test_log_evidence_matches_prior_monte_carlo(conjugate_family):
    """Brute force: ``log p(y) ≈ log mean_s p(y | θ_s)`` over 10⁶ prior draws from the model."""
    family = conjugate_family
    num_draws = 1_000_000
    _, x, y = simulate(family, 1, 3, seed=6, dtype=torch.float64)
    x, y = x[0], y[0]
    trace = trace_model(family, x.expand(num_draws, *x.shape), y.expand(num_draws, *y.shape))
    trace.compute_log_prob()
    log_likelihood = trace.nodes["y"]["log_prob"].sum(-1)
    assert log_likelihood.shape == (num_draws,)
    estimate = log_likelihood.logsumexp(0) - math.log(num_draws)
    weights = (log_likelihood - log_likelihood.max()).exp()
    relative_se = weights.std() / (weights.mean() * math.sqrt(num_draws))  # se of the log
    exact = family.log_evidence(x, y)
    assert exact.shape == ()
    assert abs(estimate - exact) < 5 * relative_se + 1e-3


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_exact_posterior_matches_nuts(conjugate_family):
    family = conjugate_family
    _, x, y = simulate(family, 1, 20, seed=5)
    x, y = x[0], y[0]
    # The JIT and a lower target acceptance (longer steps, shorter trees) keep each
    # run to a few seconds; the ESS-scaled tolerances below account for the mixing.
    kernel = NUTS(family.model, jit_compile=True, ignore_jit_warnings=True, target_accept_prob=0.6)
    mcmc = MCMC(kernel, num_samples=400, warmup_steps=300, disable_progbar=True)
    mcmc.run(x, y)
    samples = family.flatten_latents(mcmc.get_samples()).double()
    exact = family.exact_posterior(x, y).sample((100_000,)).double()
    assert effective_sample_size(samples.unsqueeze(0)).min() > 100
    mean_z, cov_z = chain_moment_z_scores(samples, exact.mean(0), exact.T.cov())
    assert mean_z.max() < MAX_Z, (samples.mean(0), exact.mean(0))
    assert cov_z.max() < MAX_Z, (samples.T.cov(), exact.T.cov())


def test_exact_references_reject_mismatched_shapes(conjugate_family):
    family = conjugate_family
    _, x, y = simulate(family, 2, 4)
    for method in (family.exact_posterior, family.log_evidence):
        with pytest.raises(ValueError, match="shape"):
            method(x, y[:, :-1])


def test_normal_inverse_gamma_distribution():
    generator = torch.Generator().manual_seed(0)
    dim = 3
    loc = torch.randn(2, dim, generator=generator, dtype=torch.float64)
    factor = torch.randn(2, dim, dim, generator=generator, dtype=torch.float64)
    scale_tril = torch.linalg.cholesky(factor @ factor.mT + torch.eye(dim))
    concentration = torch.tensor([5.0, 7.0], dtype=torch.float64)
    rate = torch.tensor([1.0, 3.0], dtype=torch.float64)
    nig = NormalInverseGamma(loc, scale_tril, concentration, rate)
    assert nig.batch_shape == (2,) and nig.event_shape == (dim + 1,)

    value = nig.sample((5,))
    assert value.shape == (5, 2, dim + 1)
    assert nig.support.check(value).all()
    noise_var = value[..., -1]
    expected = dist.InverseGamma(concentration, rate).log_prob(noise_var) + dist.MultivariateNormal(
        loc, scale_tril=noise_var.sqrt()[..., None, None] * scale_tril
    ).log_prob(value[..., :-1])
    torch.testing.assert_close(nig.log_prob(value), expected)

    many = nig.sample((200_000,))
    mean_z = (many.mean(0) - nig.mean).abs() / (many.std(0) / math.sqrt(len(many)))
    assert mean_z.max() < MAX_Z
    torch.testing.assert_close(many.var(0), nig.variance, rtol=0.05, atol=0)

    expanded = nig.expand((4, 2))
    assert expanded.batch_shape == (4, 2)
    torch.testing.assert_close(expanded.log_prob(value[:4]), nig.log_prob(value[:4]))

    loc.requires_grad_(True)
    rate.requires_grad_(True)
    NormalInverseGamma(loc, scale_tril, concentration, rate).rsample((10,)).sum().backward()
    assert loc.grad is not None and rate.grad is not None
    assert torch.isfinite(rate.grad).all()


# ------------------------------------------------------ Gaussian mixture, enum
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "single"])
@pytest.mark.parametrize("with_x", [True, False], ids=["x", "no-x"])
def test_gaussian_mixture_trace_enum_elbo_runs(gaussian_mixture, batched, with_x):
    family = gaussian_mixture
    _, x, y = simulate(family, 3, 10)
    if not batched:
        x, y = x[0], y[0]
    guide = AutoNormal(poutine.block(family.model, hide=["assignment"]))
    elbo = TraceEnum_ELBO(max_plate_nesting=2)
    loss = elbo.loss_and_grads(family.model, guide, x if with_x else None, y)
    assert math.isfinite(loss)
    params = dict(pyro.get_param_store().named_parameters())  # unconstrained leaves
    assert params
    for name, param in params.items():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "single"])
def test_gaussian_mixture_enumeration_is_exact(gaussian_mixture, batched):
    """With a point-mass guide, the enumerated loss is ``−log p(θ) − Σ_n log Σ_k π_k N(y_n)``."""
    family = gaussian_mixture
    theta, x, y = simulate(family, 3, 10, dtype=torch.float64)
    if not batched:
        theta = {name: value[0] for name, value in theta.items()}
        x, y = x[0], y[0]

    def guide(x, y):
        tasks, _ = family.plates(x, point_dims=1)
        with tasks:
            for site in family.latent_sites:
                value = theta[site.name]
                if batched:
                    value = value.unsqueeze(-len(site.shape) - 1)
                pyro.sample(site.name, dist.Delta(value, event_dim=len(site.shape)))

    loss = TraceEnum_ELBO(max_plate_nesting=2).loss(family.model, guide, x, y)

    weights, locs = theta["weights"], theta["locs"]
    log_prior = dist.Dirichlet(torch.full_like(weights, family.concentration)).log_prob(weights)
    prior_scale = torch.tensor(family.prior_scale, dtype=locs.dtype)
    log_prior = log_prior + dist.Normal(0.0, prior_scale).log_prob(locs).sum((-2, -1))
    per_component = dist.Normal(locs.unsqueeze(-3), family.noise_scale).log_prob(y.unsqueeze(-2))
    log_mixture = (per_component.sum(-1) + weights.log().unsqueeze(-2)).logsumexp(-1)
    expected = -(log_prior + log_mixture.sum(-1)).sum()
    assert loss == pytest.approx(expected.item(), rel=1e-9)


# --------------------------------------------------- arguments and bad inputs
def test_bad_constructor_argument_raises_naming_it(bad_argument):
    name, kwargs = bad_argument
    (argument,) = kwargs
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        get_family(name, **kwargs)


@pytest.mark.parametrize(
    ("num_tasks", "num_points", "argument"),
    [(0, 5, "num_tasks"), (5, 0, "num_points"), (-1, 5, "num_tasks"), (2.5, 5, "num_tasks")],
)
def test_sample_rejects_bad_sizes(family, num_tasks, num_points, argument):
    with pytest.raises(ValueError, match=argument):
        family.sample(num_tasks, num_points)


def test_model_rejects_x_of_the_wrong_rank(family):
    _, x, _ = simulate(family, 2, 4)
    with pytest.raises(ValueError, match="shape"):
        family.model(x[None, None])


def test_config_round_trip_and_registry_name(family):
    config = family.config()
    json.dumps(config)
    rebuilt = get_family(family.name, **config)
    assert type(rebuilt) is type(family)
    assert rebuilt.config() == config
    assert type(family).__module__ == f"iai_prob.models.{family.name}"
    assert repr(family).startswith(f"{type(family).__name__}(")


@pytest.mark.parametrize(
    ("loc_shape", "scale_tril_shape", "pattern"),
    [
        ((), (2, 2), r"loc must have shape \(\.\.\., d\) and scale_tril"),
        ((3,), (3,), r"loc must have shape \(\.\.\., d\) and scale_tril"),
        ((3,), (2, 2), r"scale_tril must have shape \(\.\.\., 3, 3\), got \(2, 2\)"),
    ],
)
def test_normal_inverse_gamma_of_both_backends_refuses_mismatched_shapes(
    loc_shape, scale_tril_shape, pattern
):
    import numpy as np

    from iai_prob.models.numpyro_distributions import NormalInverseGamma as JaxNormalInverseGamma

    for distribution, array in (
        (NormalInverseGamma, torch.zeros),
        (JaxNormalInverseGamma, np.zeros),
    ):
        with pytest.raises(ValueError, match=pattern):
            distribution(array(loc_shape), array(scale_tril_shape), 2.0, 1.0)
