"""The convergence phase: converged wherever the encoder starts, and says when it is not.

The worst start is an untrained guide (its encoder says ``N(0, I)`` for every dataset,
``standardize=False``; a standardized one says the prior) on a model with wide priors and
raw units, where the exact posterior is thousands of prior-free sds away: the default
answer must still reach the exact posterior.
"""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Predictive
from torch.distributions import MultivariateNormal
from torch.utils._pytree import tree_leaves

from iai_prob.inference import (
    Convergence,
    IterativeAmortizedGuide,
    PosteriorNotice,
    PosteriorWarning,
)
from iai_prob.inference import guide as guide_module
from iai_prob.inference.convergence import FullData, gaussian_log_density, task_seeds
from iai_prob.inference.objectives import kl_to_exact
from iai_prob.inference.posteriors import covariance_tril
from iai_prob.inference.signals import sigma_point_target
from iai_prob.inference.task_data import TaskData
from iai_prob.models import get_family
from iai_prob.moment_matching import moment_matched
from iai_prob.refinement_state import RefinementError, RefinementState


def _raw_units_data(family, num_tasks, num_points, seed=0):
    """Covariates in raw units (mean 300, sd 50) and their responses from the prior."""
    _, x, _ = family.sample(num_tasks, num_points, generator=torch.Generator().manual_seed(seed))
    x = 300.0 + 50.0 * x
    pyro.set_rng_seed(seed)
    return x, family.model(x)  # y drawn from the prior predictive


def _kl(guide, x, y, family):
    task = guide._prepared(x, y)
    with torch.no_grad():
        state, _ = guide.solve(task)
    # the closed form in float64: in raw units its float32 rate can even come out negative
    exact = family.exact_posterior(x.double(), y.double())
    state = state._replace(loc=state.loc.double(), precision=state.precision.double())
    order = tuple(site.name for site in family.latent_sites)
    return kl_to_exact(
        state, guide.refiner.family, task.layout, exact, site_order=order, num_samples=4096
    )


@pytest.mark.parametrize("standardize", [False, True], ids=["standard-normal", "prior"])
def test_the_default_reaches_the_exact_posterior_from_an_untrained_encoder(standardize):
    family = get_family("linear_regression", dim=3, noise_scale=50.0, prior_scale=100.0)
    x, y = _raw_units_data(family, 1, 200)
    # λ_0 = N(0, I), or the prior N(0, 100² I)
    guide = IterativeAmortizedGuide(family, num_steps=0, convergence=None, standardize=standardize)
    amortized = guide.posterior(x[0], y[0])
    assert amortized.status is None
    guide.convergence = Convergence()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosteriorWarning)
        posterior = guide.posterior(x[0], y[0])
    status = posterior.status
    assert bool(status.converged) and int(status.full_steps) <= 3
    assert float(status.khat) < 0.5
    exact = family.exact_posterior(x, y)
    kl = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(posterior.mean, posterior.covariance_matrix),
        torch.distributions.MultivariateNormal(exact.loc[0], exact.covariance_matrix[0]),
    )
    kl_amortized = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(amortized.mean, amortized.covariance_matrix),
        torch.distributions.MultivariateNormal(exact.loc[0], exact.covariance_matrix[0]),
    )
    assert float(kl) <= 0.05 < float(kl_amortized)


def test_unknown_noise_in_raw_units_converges_to_the_gaussian_optimum():
    family = get_family(
        "linear_regression_unknown_noise",
        dim=2,
        prior_scale=10.0,
        noise_concentration=3.0,
        noise_rate=2000.0,
    )
    x, y = _raw_units_data(family, 2, 150, seed=1)
    guide = IterativeAmortizedGuide(family)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kl = _kl(guide, x, y, family)
    # the Newton line search tries variances of e^-600 (log p = +inf): handled, not shown
    assert not [w for w in caught if "Encountered" in str(w.message)]
    assert bool(guide.last_status.converged.all())
    assert float(kl.max()) <= 0.05, kl


def _two_modes(y):
    """A location under a sharp Cauchy likelihood, data at −5 and +5: two modes, which
    no Gaussian covers."""
    theta = pyro.sample("theta", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Cauchy(theta, 0.1), obs=y)


def test_a_posterior_the_gaussian_cannot_represent_is_flagged_by_khat():
    y = torch.tensor([-5.0, -5.1, -4.9, 5.0, 5.1, 4.9])
    guide = IterativeAmortizedGuide(_two_modes)
    with pytest.warns(PosteriorWarning, match=r"k̂ up to .* for the dataset") as record:
        posterior = guide.posterior(y)
    assert record[0].filename == __file__  # the warning names the user's line
    assert float(posterior.status.khat) > 0.7


def test_a_phase_stopped_by_its_cap_warns_naming_the_dataset_and_the_cap():
    family = get_family("logistic_regression", dim=3)
    _, x, y = family.sample(1, 40, generator=torch.Generator().manual_seed(10))
    guide = IterativeAmortizedGuide(family, convergence=Convergence(max_steps=1, tolerance=1e-9))
    with pytest.warns(PosteriorWarning, match="the dataset did not converge in 1 full-data"):
        posterior = guide.posterior(x[0], y[0])
    assert not bool(posterior.status.converged) and int(posterior.status.full_steps) == 1
    guide.convergence = Convergence()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosteriorWarning)
        assert bool(guide.posterior(x[0], y[0]).status.converged)


def test_a_usable_answer_within_the_moments_monte_carlo_error_keeps_the_vi_optimum():
    """k̂ between 0.5 and 0.7 on a logistic regression of 40 points: the VI optimum is
    0.001 nats from the posterior's moments (40,000 draws), within the 1,000 draws' Monte
    Carlo error, so the moment-matched default keeps it (and says so in its notice)."""
    family = get_family("logistic_regression", dim=3)
    _, x, y = family.sample(1, 40, generator=torch.Generator().manual_seed(10))
    guide = IterativeAmortizedGuide(family, convergence=Convergence(moment_match=False))
    with pytest.warns(PosteriorNotice, match="usable but not close") as record:
        optimum = guide.posterior(x[0], y[0])
    assert "moment" not in str(record[0].message)
    assert 0.5 < float(optimum.status.khat) <= 0.7
    guide.convergence = Convergence()
    with pytest.warns(PosteriorNotice, match="Monte Carlo error, the answer is that moment"):
        default = guide.posterior(x[0], y[0])
    torch.testing.assert_close(default.mean, optimum.mean)
    torch.testing.assert_close(default.covariance_matrix, optimum.covariance_matrix)


def _moved(shift: float, widen: float):
    """A stand-in for the moment matching that moves every band answer: its mean by
    ``shift`` sds along the first axis, its covariance times ``widen``."""

    def move(loc, precision, draws, log_weights, tasks):
        covariance = np.linalg.inv(precision)
        loc = loc + shift * np.sqrt(covariance[:, 0, 0])[:, None] * np.eye(loc.shape[-1])[0]
        return loc, np.linalg.inv(widen * covariance), np.asarray(tasks, dtype=bool)

    return move


@pytest.mark.parametrize(("shift", "widen", "kept"), [(0.0, 1.2, True), (6.0, 0.3, False)])
def test_a_moved_answer_is_kept_only_where_its_own_khat_vouches_for_it(
    monkeypatch, shift, widen, kept
):
    """A moment-matched answer gets its own k̂: a slightly wider one (k̂ ≤ 0.7) is the
    answer and its k̂ the status's; one six sds off (k̂ > 0.7) is dropped for the VI
    optimum with its own k̂."""
    family = get_family("logistic_regression", dim=3)
    _, x, y = family.sample(1, 40, generator=torch.Generator().manual_seed(10))
    guide = IterativeAmortizedGuide(family, convergence=Convergence(moment_match=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimum = guide.posterior(x[0], y[0])
        monkeypatch.setattr(guide_module, "moment_matched", _moved(shift, widen))
        guide.convergence = Convergence()
        answer = guide.posterior(x[0], y[0])
    same = torch.allclose(answer.covariance_matrix, optimum.covariance_matrix)
    assert same != kept
    assert (float(answer.status.khat) == float(optimum.status.khat)) != kept
    assert float(answer.status.khat) <= 0.7


def test_moments_beyond_their_monte_carlo_error_replace_the_answer():
    """Draws of q = N(0, I) weighted toward p = N(0.3, 1.2² I): the weighted moments move
    the answer to p's; weighted toward q itself, the answer stays."""
    generator = np.random.default_rng(0)
    draws = generator.standard_normal((20_000, 2, 3))
    target = 0.5 * (((draws - 0.3) / 1.2) ** 2).sum(-1) + 3 * np.log(1.2)
    log_weights = -target + 0.5 * (draws**2).sum(-1)  # log p − log q, up to a constant
    log_weights[:, 1] = 0.0  # task 1: q is p
    log_weights -= np.log(np.exp(log_weights).sum(0))
    loc, precision = np.zeros((2, 3)), np.tile(np.eye(3), (2, 1, 1))
    new_loc, new_precision, moved = moment_matched(
        loc, precision, draws, log_weights, np.array([True, True])
    )
    np.testing.assert_array_equal(moved, [True, False])
    np.testing.assert_allclose(new_loc[0], 0.3, atol=0.05)
    np.testing.assert_allclose(np.diag(np.linalg.inv(new_precision[0])), 1.2**2, rtol=0.15)
    np.testing.assert_array_equal(new_loc[1], loc[1])  # within Monte Carlo error: kept
    np.testing.assert_array_equal(new_precision[1], precision[1])
    unchanged = moment_matched(loc, precision, draws, log_weights, np.array([False, False]))
    np.testing.assert_array_equal(unchanged[0], loc)
    assert not unchanged[2].any()


def test_a_batch_of_tasks_names_its_tasks():
    family = get_family("logistic_regression", dim=2)
    _, x, y = family.sample(3, 30, generator=torch.Generator().manual_seed(3))
    guide = IterativeAmortizedGuide(family, convergence=Convergence(max_steps=0, tolerance=1e-9))
    with pytest.warns(PosteriorWarning, match=r"tasks 0, 1, 2 did not converge"):
        posterior = guide.posterior(x, y)
    assert posterior.status.converged.shape == (3,)


def test_predictive_draws_solve_once_and_warn_once():
    y = torch.tensor([-5.0, -5.1, -4.9, 5.0, 5.1, 4.9])
    guide = IterativeAmortizedGuide(_two_modes)
    with pytest.warns(PosteriorWarning) as record:
        Predictive(_two_modes, guide=guide, num_samples=20)(y)
    messages = [str(w.message) for w in record]
    assert len(messages) == len(set(messages))  # the 20 draws share one solve
    assert any("k̂" in message for message in messages)


@pytest.mark.parametrize("noise_shape", [(6, 4), (6, 3, 4)], ids=["shared", "per task"])
def test_the_khat_draws_log_density_is_the_gaussians_own(noise_shape):
    """``log q`` of ``μ + L ε`` from ``ε`` and ``L`` alone equals the distribution's, for
    draws shared by every task ``(S, D)`` and each task's own ``(S, T, D)``."""
    generator = torch.Generator().manual_seed(7)
    factor = torch.randn(3, 4, 4, dtype=torch.float64, generator=generator)
    precision = factor @ factor.mT + 0.5 * torch.eye(4, dtype=torch.float64)
    loc = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    noise = torch.randn(*noise_shape, dtype=torch.float64, generator=generator)
    tril = covariance_tril(precision)
    per_task = noise if noise.dim() == 3 else noise[:, None].expand(-1, 3, -1)
    draws = loc + torch.einsum("tij,stj->sti", tril, per_task)
    expected = MultivariateNormal(loc, precision_matrix=precision).log_prob(draws)
    torch.testing.assert_close(gaussian_log_density(noise, tril), expected)


def test_chunks_add_up_to_the_full_data():
    family = get_family("logistic_regression", dim=3)
    _, x, y = family.sample(2, 50, generator=torch.Generator().manual_seed(3))
    guide = IterativeAmortizedGuide(family)
    task = guide._prepared(x, y)
    loc = torch.randn(2, 3, generator=torch.Generator().manual_seed(4))
    precision = torch.eye(3).expand(2, 3, 3) * 2.0
    whole = FullData.in_memory(task.data, task.log_joint, chunk_size=1000)
    chunked = FullData.in_memory(task.data, task.log_joint, chunk_size=7)
    assert len(chunked.chunks) == 8  # 50 points by 7
    options = (guide.refiner.family, 1e-3, None)
    targets = [  # one kernel on one chunk; the chunks' weighted sums otherwise
        full.solve(sigma_point_target, (loc, precision), options) for full in (whole, chunked)
    ]
    for a, b in zip(tree_leaves(targets[0]), tree_leaves(targets[1]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)
    state = RefinementState(loc, precision)
    z = guide.refiner.family.distribution(state.loc, state.precision).sample((5,))
    torch.testing.assert_close(whole.per_particle(z), chunked.per_particle(z), rtol=1e-5, atol=1e-3)


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="max_steps"):
        Convergence(max_steps=-1)
    with pytest.raises(ValueError, match="tolerance"):
        Convergence(tolerance=0.0)
    with pytest.raises(ValueError, match="khat_draws"):
        Convergence(khat_draws=10)
    family = get_family("linear_regression", dim=2)
    with pytest.raises(ValueError, match="convergence must be"):
        IterativeAmortizedGuide(family, convergence=30)


def test_a_stream_is_converged_pass_by_pass_and_a_one_shot_iterator_says_it_is_not():
    family = get_family("linear_regression", dim=2, noise_scale=1.0, prior_scale=100.0)
    x, y = _raw_units_data(family, 1, 60)
    batches = [(x[0, i : i + 20], y[0, i : i + 20]) for i in range(0, 60, 20)]
    guide = IterativeAmortizedGuide(family, num_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosteriorWarning)
        posterior = guide.refine(batches, num_points=60)
    assert bool(posterior.status.converged)
    whole = guide.posterior(x[0], y[0])
    torch.testing.assert_close(posterior.mean, whole.mean, rtol=1e-4, atol=1e-4)
    with pytest.warns(PosteriorWarning, match="cannot read again"):
        unchecked = guide.refine(iter(batches), num_points=60)
    assert unchecked.status is None


def test_an_answer_that_is_no_gaussian_in_the_guides_dtype_is_refused_by_name(monkeypatch):
    """The phase runs in float64; an answer whose precision is positive definite there but
    not once cast to the guide's float32 (scales spanning more than float32 resolves, as
    a hierarchical model's group scale collapsing towards zero) is a RefinementError
    naming the task, as NumPyro's ``finish`` refuses it, not a torch ValueError at the
    distribution."""
    family = get_family("linear_regression", dim=2, noise_scale=0.5)
    guide = IterativeAmortizedGuide(family)
    _, x, y = family.sample(2, 16, generator=torch.Generator().manual_seed(0))
    guide.posterior(x[0], y[0])
    real_converge = guide_module.converge
    # eigenvalues 2 and 2e-8 in float64; float32 rounds the off-diagonal to 1: singular
    nearly_singular = torch.tensor([[1.0, 1 - 2e-8], [1 - 2e-8, 1.0]], dtype=torch.float64)

    def ill_conditioned(state, *args, **kwargs):
        state, converged, steps, residual = real_converge(state, *args, **kwargs)
        precision = nearly_singular.expand_as(state.precision)
        return state._replace(precision=precision), converged, steps, residual

    monkeypatch.setattr(guide_module, "converge", ill_conditioned)
    with pytest.raises(RefinementError, match=r"task\(s\) \[0\].*not positive definite"):
        guide.posterior(x[1], y[1])


def test_each_task_draws_its_own_khat_draws_from_its_data():
    """The k̂ check's draws come from each task's own data: the same for a task alone
    and padded in a batch (its padding left out), different for another dataset."""
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(3, 50, 2, generator=generator)
    alone = [
        FullData([TaskData((), {}, features[t : t + 1, :40], 1, 40, 40)], None, 40)
        for t in range(3)
    ]
    mask = torch.arange(50) < 40
    padded = FullData([TaskData((), {}, features, 3, 50, 50, mask=mask.expand(3, 50))], None, 50)
    seeds = task_seeds(padded, 0)
    assert seeds == [task_seeds(full, 0)[0] for full in alone]
    assert len(set(seeds)) == 3
    assert task_seeds(padded, 1) != seeds
