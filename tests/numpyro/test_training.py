"""``fit`` in JAX: one compiled step, checkpoints both backends load, exact resume."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from iai_prob.inference.checkpoint import load_guide as load_torch_guide
from iai_prob.models import LinearRegression as TorchLinearRegression
from iai_prob.numpyro import IterativeAmortizedGuide, fit
from iai_prob.numpyro.checkpoint import load_guide
from iai_prob.numpyro.models import LinearRegression
from iai_prob.numpyro.refinement import batches_to_schedule

SMALL = {"encoder": "deep_sets", "encoder_options": {"embed_dim": 8, "hidden_dim": 16}}
OPTIONS = {"tasks_per_step": 4, "num_points": (8, 32), "objective": "mixed", "progress": False}


def _guide():
    return IterativeAmortizedGuide(LinearRegression(dim=2), batch_size=16, **SMALL)


@pytest.mark.slow
def test_fit_resumes_exactly_and_pytorch_loads_the_result(tmp_path):
    family = LinearRegression(dim=2)
    full = fit(_guide(), family, steps=3, **OPTIONS)
    assert len(full.losses) == 3 and all(np.isfinite(full.losses))
    assert full.kls and full.kls[-1][1] < 0.05  # conjugate family: CVI steps are exact

    guide = _guide()
    fit(guide, family, steps=2, checkpoint_dir=tmp_path, checkpoint_every=1, **OPTIONS)
    resumed = fit(guide, family, steps=3, checkpoint_dir=tmp_path, **OPTIONS)
    np.testing.assert_allclose(resumed.losses, full.losses, rtol=1e-5)

    # the JAX-trained guide loads back in JAX and in PyTorch, and both refine alike
    jax_guide, params = load_guide(tmp_path / "guide", family)
    torch_guide = load_torch_guide(tmp_path / "guide", TorchLinearRegression(dim=2))
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
    family = LinearRegression(dim=2)
    with pytest.raises(ValueError, match="objective"):
        fit(_guide(), family, objective="elbo")
    with pytest.raises(ValueError, match="num_points"):
        fit(_guide(), family, num_points=(0, 4))
    with pytest.raises(ValueError, match="tasks must be a task family"):
        fit(_guide(), [(np.zeros((3, 2)), np.zeros(3))])
