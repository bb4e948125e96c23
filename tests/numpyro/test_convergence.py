"""The NumPyro convergence phase: converged wherever the encoder starts, and says when not.

The twin of ``tests/inference/test_convergence.py``. The worst start is an untrained guide
(its encoder says ``N(0, I)`` for every dataset, ``standardize=False``) on a model with
wide priors and raw units, where the exact posterior is millions of nats away: the default
answer must still reach it. Small shapes, so that each compiled phase costs seconds.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import torch

from iai_prob import pretrained as torch_pretrained
from iai_prob.convergence_settings import Convergence
from iai_prob.models import get_family
from iai_prob.numpyro import IterativeAmortizedGuide, pretrained
from iai_prob.numpyro import convergence as numpyro_convergence
from iai_prob.numpyro.convergence import TRACE_COUNTS, FullData, task_keys
from iai_prob.numpyro.laplace import _log_joint
from iai_prob.numpyro.posteriors import gaussian_kl
from iai_prob.numpyro.task_data import TaskData
from iai_prob.posterior_status import PosteriorWarning

SMALL = {"encoder": "deep_sets", "encoder_options": {"embed_dim": 8, "hidden_dim": 16}}


def _kl_to_exact(posterior, exact):
    """``KL(q ‖ p)`` in float64 (raw units make the posterior precision ill-conditioned)."""
    with jax.enable_x64(True):
        precision = jnp.linalg.inv(jnp.asarray(posterior.covariance_matrix, jnp.float64))
        return float(
            gaussian_kl(
                jnp.asarray(posterior.mean, jnp.float64),
                precision,
                jnp.asarray(exact.mean, jnp.float64),
                jnp.asarray(exact.precision_matrix, jnp.float64),
            )
        )


def test_the_default_reaches_the_exact_posterior_from_an_untrained_encoder():
    family = get_family("linear_regression", dim=3, noise_scale=50.0, prior_scale=100.0).on(
        "numpyro"
    )
    theta, x, _ = family.sample(jax.random.PRNGKey(0), 1, 200)
    x = 300.0 + 50.0 * x[0]  # covariates in raw units: mean 300, sd 50
    y = x @ theta["w"][0] + 50.0 * jax.random.normal(jax.random.PRNGKey(1), (200,))
    guide = IterativeAmortizedGuide(  # λ_0 = N(0, I)
        family, num_steps=0, convergence=None, standardize=False, **SMALL
    )
    params = guide.init_params(x, y)
    amortized = guide.posterior(params, x, y)
    assert amortized.status is None and guide.last_status is None
    guide.convergence = Convergence()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosteriorWarning)
        posterior = guide.posterior(params, x, y)
    status = posterior.status
    assert status is guide.last_status
    assert bool(status.converged) and int(status.full_steps) <= 3
    assert float(status.khat) < 0.5
    with jax.enable_x64(True):  # the closed form in float64
        exact = family.exact_posterior(jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64))
    assert _kl_to_exact(posterior, exact) <= 0.05 < _kl_to_exact(amortized, exact)
    assert posterior.mean.dtype == jnp.float32  # the answer in the guide's dtype
    assert not jax.config.jax_enable_x64  # float64 stayed local to the phase


def test_a_phase_stopped_by_its_cap_warns_naming_the_dataset_and_the_cap():
    family = get_family("logistic_regression", dim=3).on("numpyro")
    _, x, y = family.sample(jax.random.PRNGKey(2), 1, 40)
    guide = IterativeAmortizedGuide(
        family,
        **SMALL,
        convergence=Convergence(max_steps=1, tolerance=1e-9),
    )
    params = guide.init_params(x[0], y[0])
    with pytest.warns(PosteriorWarning, match="the dataset did not converge in 1 full-data"):
        posterior = guide.posterior(params, x[0], y[0])
    assert not bool(posterior.status.converged) and int(posterior.status.full_steps) == 1
    traces = TRACE_COUNTS["converge"]
    guide.convergence = Convergence()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = guide.posterior(params, x[0], y[0]).status
    assert not [w for w in caught if "did not converge" in str(w.message)]
    assert bool(status.converged) and status.residual < 1e-3
    assert TRACE_COUNTS["converge"] == traces  # the cap and tolerance are inputs
    # the phase starts from the encoder's λ_0 (no learned pass) unless refine_first
    assert float(status.passes) == int(status.full_steps)
    guide.convergence = Convergence(max_steps=1, tolerance=1e-9, refine_first=True)
    with pytest.warns(PosteriorWarning, match="did not converge"):
        status = guide.posterior(params, x[0], y[0]).status
    assert float(status.passes) == 2.0  # one learned pass of 40 points, one full step


@pytest.mark.parametrize(("shift", "widen", "kept"), [(0.0, 1.2, True), (6.0, 0.3, False)])
def test_a_moved_answer_is_kept_only_where_its_own_khat_vouches_for_it(
    monkeypatch, shift, widen, kept
):
    """As the PyTorch guide: a moment-matched answer is kept where its own k̂ ≤ 0.7."""
    from tests.inference.test_convergence import _moved

    family = get_family("logistic_regression", dim=3).on("numpyro")
    _, x, y = family.sample(jax.random.PRNGKey(8), 1, 40)  # k̂ = 0.60 at the VI optimum
    guide = IterativeAmortizedGuide(family, **SMALL, convergence=Convergence(moment_match=False))
    params = guide.init_params(x[0], y[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimum = guide.posterior(params, x[0], y[0])
        assert 0.5 < float(optimum.status.khat) <= 0.7  # in the band: matching is tried
        monkeypatch.setattr(numpyro_convergence, "moment_matched", _moved(shift, widen))
        guide.convergence = Convergence()
        answer = guide.posterior(params, x[0], y[0])
    covariances = (np.asarray(answer.covariance_matrix), np.asarray(optimum.covariance_matrix))
    assert np.allclose(*covariances) != kept
    assert (float(answer.status.khat) == float(optimum.status.khat)) != kept
    assert float(answer.status.khat) <= 0.7


def test_a_batch_of_tasks_names_its_tasks():
    family = get_family("logistic_regression", dim=2).on("numpyro")
    _, x, y = family.sample(jax.random.PRNGKey(3), 3, 30)
    guide = IterativeAmortizedGuide(
        family,
        **SMALL,
        convergence=Convergence(max_steps=0, tolerance=1e-9),
    )
    params = guide.init_params(x, y)
    with pytest.warns(PosteriorWarning, match=r"tasks 0, 1, 2 did not converge"):
        posterior = guide.posterior(params, x, y)
    assert posterior.status.converged.shape == (3,)
    assert (posterior.status.full_steps == 0).all()


def test_chunks_add_up_to_the_full_data():
    family = get_family("logistic_regression", dim=3).on("numpyro")
    _, x, y = family.sample(jax.random.PRNGKey(3), 2, 50)
    guide = IterativeAmortizedGuide(family, **SMALL)
    task = guide.prepare(x, y)
    whole = FullData.in_memory(task.data, task.log_joint, chunk_size=1000)
    chunked = FullData.in_memory(task.data, task.log_joint, chunk_size=7)
    assert chunked.index.shape == (8, 7)  # 50 points by 7, the last chunk padded
    z = jax.random.normal(jax.random.PRNGKey(4), (5, 2, 3))

    @jax.jit
    def evaluate(z):
        return [(full.value_and_grad(z), full.hessian(z[:1])) for full in (whole, chunked)]

    (whole_values, whole_hessian), (chunked_values, chunked_hessian) = evaluate(z)
    for a, b in zip(whole_values, chunked_values, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(whole_hessian, chunked_hessian, rtol=1e-5, atol=1e-3)


def _shrinking_scale(y):
    """``y ~ U(0, e^θ)``: ``log p(y | θ) = −θ`` overflows to ``+inf`` once ``e^θ = 0``."""
    theta = numpyro.sample("theta", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Uniform(0.0, jnp.exp(theta)), obs=y)


def test_an_overflowing_log_joint_counts_as_minus_infinity():
    y = jnp.zeros(3)
    guide = IterativeAmortizedGuide(_shrinking_scale, **SMALL)
    task = guide.prepare(y)
    full = FullData.in_memory(task.data, task.log_joint, chunk_size=100)
    z = jnp.array([[[0.0]], [[-1000.0]]])  # (S = 2, T = 1, D = 1)
    assert np.isposinf(full.per_particle(z)[1, 0])
    assert np.isfinite(full.per_task_mean(z[:1])[0])
    assert np.isneginf(full.per_task_mean(z)[0])  # an ELBO never won by an overflow
    assert np.isneginf(_log_joint(full, z[1])[0])  # nor a Newton line search


def test_a_traced_call_gives_the_learned_state_without_a_status():
    """Under a JAX transformation of the params (SVI's gradient) the phase cannot run."""
    family = get_family("linear_regression", dim=2).on("numpyro")
    _, x, y = family.sample(jax.random.PRNGKey(5), 1, 20)
    guide = IterativeAmortizedGuide(family, num_steps=0, **SMALL)
    params = guide.init_params(x[0], y[0])
    task = guide.prepare(x[0], y[0])
    statuses = []

    def solved(params):
        state, status = guide.solve(params, task)
        statuses.append(status)
        return state.loc

    shape = jax.eval_shape(solved, params)
    assert shape.shape == (1, 2) and statuses == [None]


def test_pytorch_and_numpyro_converged_posteriors_agree():
    torch_guide = torch_pretrained.load("linear_regression")
    guide, params = pretrained.load("linear_regression")
    _, x, y = guide.family.sample(jax.random.PRNGKey(11), 1, 150)
    x, y = x[0], y[0]
    found = guide.posterior(params, x, y)
    expected = torch_guide.posterior(torch.as_tensor(np.array(x)), torch.as_tensor(np.array(y)))
    assert bool(found.status.converged) and bool(expected.status.converged)
    exact = guide.family.exact_posterior(x, y)
    sd = np.sqrt(np.diag(np.asarray(exact.covariance_matrix)))
    error = np.abs(np.asarray(found.mean) - expected.mean.numpy()) / sd
    assert error.max() < 1e-3, error
    np.testing.assert_allclose(
        np.asarray(found.covariance_matrix),
        expected.covariance_matrix.numpy(),
        rtol=1e-3,
        atol=1e-3 * sd.min() ** 2,
    )


def test_bad_settings_are_refused_by_name():
    family = get_family("linear_regression", dim=2).on("numpyro")
    with pytest.raises(ValueError, match="convergence must be"):
        IterativeAmortizedGuide(family, convergence=30)


def test_no_step_is_taken_to_an_invalid_candidate_from_a_state_whose_elbo_is_minus_inf():
    """As the PyTorch twin: from a state whose ELBO is ``−inf``, an invalid candidate
    (not positive definite, ELBO ``−inf`` too) is not "no worse"; the task keeps its state."""
    from iai_prob.numpyro.damping import damped_combine

    class MinusInf:
        def per_task_mean(self, z, batch=None):
            return jnp.full(z.shape[1:-1], -jnp.inf)

    loc = jnp.zeros((2, 2))
    precision = jnp.broadcast_to(jnp.eye(2), (2, 2, 2))
    target = (jnp.zeros((2, 2)), -precision)
    _, new_precision, used = damped_combine(
        loc,
        precision,
        jnp.ones(2),
        [lambda: target],
        None,
        MinusInf(),
        base=jnp.full(2, -jnp.inf),
    )
    assert (np.asarray(used) == 0).all()
    np.testing.assert_allclose(new_precision, precision)


def _task_data(features, task_mask=None):
    size = features.shape[1]
    return TaskData((), {}, features, jnp.ones(size, bool), jnp.asarray(size), (), True, task_mask)


def test_each_task_draws_its_own_khat_draws_from_its_data():
    """The k̂ check's keys come from each task's own data: the same for a task alone
    and padded in a batch (its padding left out), different for another dataset."""
    features = jax.random.normal(jax.random.PRNGKey(3), (3, 50, 2))
    key = jax.random.PRNGKey(0)
    task_mask = jnp.broadcast_to(jnp.arange(50) < 40, (3, 50))
    padded = task_keys(_task_data(features, task_mask), key)
    alone = [task_keys(_task_data(features[t : t + 1, :40]), key)[0] for t in range(3)]
    np.testing.assert_array_equal(np.asarray(padded), np.stack([np.asarray(a) for a in alone]))
    assert len({tuple(np.asarray(k).ravel()) for k in padded}) == 3
