"""``fit`` in JAX: one compiled step, checkpoints both backends load, the same seed gives
the same run (resumed or not), and a training folder holds one run."""

from __future__ import annotations

from contextlib import nullcontext

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import torch

from iai_prob.inference import IterativeAmortizedGuide as TorchGuide
from iai_prob.inference import fit as torch_fit
from iai_prob.inference.guide import load_guide as load_torch_guide
from iai_prob.models import LinearRegression
from iai_prob.numpyro import IterativeAmortizedGuide, fit
from iai_prob.numpyro.guide import load_guide
from iai_prob.numpyro.objectives import kl_to_exact
from iai_prob.numpyro.refinement import batches_to_schedule
from iai_prob.numpyro.sources import PriorPredictiveTasks
from iai_prob.training_folder import FolderInUseError, RunMismatchError, lock_folder

SMALL = {"encoder": "deep_sets", "encoder_options": {"embed_dim": 8, "hidden_dim": 16}}
OPTIONS = {"tasks_per_step": 4, "num_points": (8, 32), "objective": "mixed", "progress": False}


def _guide():
    return IterativeAmortizedGuide(LinearRegression(dim=2).on("numpyro"), batch_size=16, **SMALL)


@pytest.mark.slow
def test_fit_resumes_exactly_and_pytorch_loads_the_result(tmp_path):
    family = LinearRegression(dim=2).on("numpyro")
    full = fit(_guide(), family, steps=3, **OPTIONS)
    assert len(full.losses) == 3 and all(np.isfinite(full.losses))
    assert full.kls and full.kls[-1][1] < 0.05  # conjugate family: CVI steps are exact

    guide = _guide()
    fit(guide, family, steps=2, checkpoint_dir=tmp_path, checkpoint_every=1, **OPTIONS)
    resumed = fit(guide, family, steps=3, checkpoint_dir=tmp_path, **OPTIONS)
    # the same seed, bit for bit: two runs, one of them killed (here: stopped) and resumed
    assert resumed.losses == full.losses
    for a, b in zip(
        jax.tree_util.tree_leaves(resumed.params),
        jax.tree_util.tree_leaves(full.params),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the folder holds this run: another seed or another model is refused before compiling
    with pytest.raises(RunMismatchError, match="holds a run with seed 0, not 1"):
        fit(_guide(), family, steps=4, checkpoint_dir=tmp_path, seed=1, **OPTIONS)
    other = LinearRegression(dim=3).on("numpyro")
    with pytest.raises(RunMismatchError, match=r"model linear_regression\(dim=2, .*dim=3"):
        guide_3 = IterativeAmortizedGuide(other, batch_size=16, **SMALL)
        fit(guide_3, other, steps=4, checkpoint_dir=tmp_path, **OPTIONS)

    # the JAX-trained guide loads back in JAX and in PyTorch, and both refine alike
    jax_guide, params = load_guide(tmp_path / "guide", family)
    torch_guide = load_torch_guide(tmp_path / "guide", LinearRegression(dim=2))
    for (_, a), (_, b) in zip(
        sorted(jax.tree_util.tree_leaves_with_path(params), key=str),
        sorted(jax.tree_util.tree_leaves_with_path(resumed.params), key=str),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    generator = torch.Generator().manual_seed(1)
    _, x, y = torch_guide.family.sample(1, 40, generator=generator)
    expected = torch_guide.posterior(x[0], y[0])
    schedule = batches_to_schedule([b.numpy() for b in torch_guide.schedule(40)])
    found = jax_guide.posterior(
        params, jnp.asarray(x[0].numpy()), jnp.asarray(y[0].numpy()), schedule=schedule
    )
    np.testing.assert_allclose(np.asarray(found.mean), expected.mean.numpy(), atol=1e-4)


def test_fit_rejects_bad_options():
    family = LinearRegression(dim=2).on("numpyro")
    with pytest.raises(ValueError, match="objective"):
        fit(_guide(), family, objective="elbo")
    with pytest.raises(ValueError, match="num_points"):
        fit(_guide(), family, num_points=(0, 4))
    for option, value in [("steps", 0), ("checkpoint_every", 0), ("tasks_per_step", 0)]:
        with pytest.raises(ValueError, match=f"{option} must be a positive integer, got 0"):
            fit(_guide(), family, **{option: value})
    with pytest.raises(ValueError, match="tasks must be a task family"):
        fit(_guide(), [(np.zeros((3, 2)), np.zeros(3))])
    # more tasks of D = 8 per step than stay serial in jaxlib's LAPACK (390) hung on 2 cores
    with pytest.raises(ValueError, match="tasks_per_step gives 391 tasks per device"):
        family = LinearRegression(dim=8).on("numpyro")
        guide = IterativeAmortizedGuide(family, batch_size=16, **SMALL)
        fit(guide, family, tasks_per_step=391, num_points=(4, 8))


def _user_model(x, y=None):
    """Bayesian linear regression written as a plain NumPyro model (dim 2, σ = 0.5)."""
    tasks = numpyro.plate("tasks", x.shape[0], dim=-2) if x.ndim == 3 else nullcontext()
    with tasks:
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with tasks, numpyro.plate("data", x.shape[-2], dim=-1):
        return numpyro.sample("y", dist.Normal((x * w).sum(-1), 0.5), obs=y)


def _covariates(key, num_tasks, num_points):
    return jax.random.normal(key, (num_tasks, num_points, 2))


def test_prior_predictive_tasks_draw_the_model_s_joint():
    source = PriorPredictiveTasks(_user_model, _covariates)
    theta, x, y = source.sample(jax.random.PRNGKey(0), 2000, 8)
    assert theta["w"].shape == (2000, 2) and x.shape == (2000, 8, 2) and y.shape == (2000, 8)
    residual = np.asarray(y - jnp.einsum("tnd,td->tn", x, theta["w"]))
    assert abs(residual.std() - 0.5) < 0.01  # y | w, x ~ N(xᵀw, 0.5²)
    assert abs(float(theta["w"].std()) - 1.0) < 0.03  # w ~ N(0, 1)
    with pytest.raises(ValueError, match=r"must return x of shape \(3, 4, ...\)"):
        PriorPredictiveTasks(_user_model, lambda key, t, n: jnp.zeros((n, 2))).sample(
            jax.random.PRNGKey(0), 3, 4
        )
    with pytest.raises(ValueError, match="no site named 'obs'"):
        PriorPredictiveTasks(_user_model, _covariates, observed="obs").sample(
            jax.random.PRNGKey(0), 3, 4
        )
    with pytest.raises(ValueError, match="PriorPredictiveTasks"):
        fit(_guide(), [(jnp.zeros((4, 2)), jnp.zeros(4))], steps=1, progress=False)


@pytest.mark.heavy  # 36 s of one CI worker (2026-12-07): `make test-all` runs it
def test_fit_trains_on_a_user_model_s_prior_predictive():
    guide = IterativeAmortizedGuide(_user_model, batch_size=16, **SMALL)
    source = PriorPredictiveTasks(_user_model, _covariates)
    result = fit(guide, source, steps=3, **OPTIONS)
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    assert result.kls == []  # no closed form known for a user's model
    # the model is conjugate, so the trained guide's refinement is exact
    family = LinearRegression(dim=2).on("numpyro")
    _, x, y = family.sample(jax.random.PRNGKey(9), 1, 40)
    posterior = guide.posterior(result.params, x[0], y[0])
    exact = family.exact_posterior(x[0], y[0])
    kl = float(kl_to_exact(posterior.mean, posterior.precision_matrix, exact))
    assert kl < 0.05, kl


def test_a_folder_in_use_or_holding_a_pytorch_run_is_refused(tmp_path):
    family = LinearRegression(dim=2).on("numpyro")
    with lock_folder(tmp_path), pytest.raises(FolderInUseError, match="in use"):
        fit(_guide(), family, steps=1, checkpoint_dir=tmp_path, **OPTIONS)
    torch_family = LinearRegression(dim=2)
    torch_guide = TorchGuide(torch_family, batch_size=16, **SMALL)
    torch_fit(torch_guide, torch_family, steps=1, checkpoint_dir=tmp_path, **OPTIONS)
    with pytest.raises(RunMismatchError, match="holds a run with backend 'torch', not 'jax'"):
        fit(_guide(), family, steps=2, checkpoint_dir=tmp_path, **OPTIONS)


def test_weight_decay_trains_the_weights_but_never_moves_the_prior_arrays():
    import optax

    guide = _guide()
    family = LinearRegression(dim=2).on("numpyro")
    decaying = optax.adamw(1e-2, weight_decay=1.0)
    result = fit(guide, family, steps=2, optimizer=decaying, validation_tasks=0, **OPTIONS)
    start = guide.params_of(guide.build(*guide.dims))[guide.param_name]
    trained = result.params[guide.param_name]
    assert trained.prior_loc is not None  # standardized, the default
    np.testing.assert_array_equal(trained.prior_loc, start.prior_loc)
    np.testing.assert_array_equal(trained.prior_scale, start.prior_scale)
    assert not np.allclose(trained.init_head.weight, start.init_head.weight)
