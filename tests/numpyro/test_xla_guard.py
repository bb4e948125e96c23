"""The guards against jaxlib's miscompiled fused reduction (jax-ml/jax#39103) and against
its batched LAPACK calls waiting on a busy thread pool."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jaxlib
import numpy as np
import pytest

from iai_prob.numpyro import xla_guard

AFFECTED = jaxlib.__version__ == "0.10.2"


def test_flag_is_set_and_reductions_are_right():
    if xla_guard._version(jaxlib.__version__) >= (0, 10, 2):
        assert xla_guard.YNN_REDUCE_FLAG in os.environ["XLA_FLAGS"].split()
    xla_guard.check_fused_reductions()  # raises on a wrong reduction


def _run(code: str, xla_flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.skipif(not AFFECTED, reason="the miscompilation is known on jaxlib 0.10.2")
@pytest.mark.parametrize(
    "code, xla_flags",
    [
        # the user forces the faulty fusion: the guard leaves XLA_FLAGS alone
        (
            "import iai_prob.numpyro as n; from iai_prob.numpyro.xla_guard import *\n"
            "check_fused_reductions()",
            "--xla_cpu_experimental_ynn_fusion_type=reduce",
        ),
        # JAX started before iai_prob.numpyro was imported: too late to set the flag
        (
            "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()\n"
            "from iai_prob.numpyro.xla_guard import *\n"
            "assert not disable_ynn_reduce_fusion()\n"
            "from iai_prob.models import LinearRegression\n"
            "from iai_prob.numpyro import IterativeAmortizedGuide\n"
            "family = LinearRegression(dim=2).on('numpyro')\n"
            "_, x, y = family.sample(__import__('jax').random.PRNGKey(0), 2, 8)\n"
            "IterativeAmortizedGuide(family.model).init_params(x, y)",
            "",
        ),
    ],
    ids=["forced-fusion", "backend-already-started"],
)
def test_a_miscompiling_backend_is_refused(code, xla_flags):
    result = _run(code, xla_flags)
    assert result.returncode != 0
    assert "XLAMiscompilationError" in result.stderr, result.stderr[-2000:]
    assert xla_guard.YNN_REDUCE_FLAG in result.stderr  # the message names the fix


def test_lapack_serial_batch_keeps_every_call_below_the_parallel_work():
    for cost in (1, 40, 512, 2560, 10**6):
        batch = xla_guard.lapack_serial_batch(cost)
        assert batch >= 1
        assert batch == 1 or batch * cost < xla_guard.LAPACK_PARALLEL_WORK
        assert (batch + 1) * cost >= xla_guard.LAPACK_PARALLEL_WORK
    assert xla_guard.lapack_serial_batch(8**3) == 390  # LU of D = 8
    assert xla_guard.lapack_serial_batch(5 * 8**3) == 78  # eigh of D = 8


def test_serial_eigh_matches_eigh_in_one_call():
    """200 matrices of D = 8 go to eigh in pieces of 78, with the same decomposition."""
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(2, 100, 8, 8)).astype(np.float32)
    matrix = jax.numpy.asarray(factor @ np.swapaxes(factor, -1, -2))
    eigenvalues, eigenvectors = jax.jit(xla_guard.serial_eigh)(matrix)
    expected_values, _ = jax.numpy.linalg.eigh(matrix)
    assert eigenvalues.shape == (2, 100, 8) and eigenvectors.shape == (2, 100, 8, 8)
    np.testing.assert_allclose(eigenvalues, expected_values, rtol=1e-4, atol=1e-4)
    rebuilt = (eigenvectors * eigenvalues[..., None, :]) @ np.swapaxes(eigenvectors, -1, -2)
    np.testing.assert_allclose(rebuilt, matrix, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(  # the trajectory case: 23 s of one CI worker, `make test-all`
    "trajectory", [False, pytest.param(True, marks=pytest.mark.heavy)]
)
def test_chunked_refinement_equals_the_whole_batch(trajectory, monkeypatch):
    """Refining 7 tasks in chunks of 3 gives what refining them at once gives."""
    from iai_prob.numpyro import guide as guide_module
    from iai_prob.numpyro import pretrained

    guide, params = pretrained.load("linear_regression")
    _, x, y = guide.family.sample(jax.random.PRNGKey(5), 7, 40)
    task = guide.prepare(x, y)
    whole = guide.run(params, task, trajectory=trajectory)
    monkeypatch.setattr(guide_module, "serial_task_limit", lambda latent_dim: 3)
    chunked = guide.run(params, task, trajectory=trajectory)
    for found, expected in zip(
        jax.tree_util.tree_leaves(chunked), jax.tree_util.tree_leaves(whole), strict=True
    ):
        assert np.shape(found) == np.shape(expected)
        np.testing.assert_allclose(found, expected, rtol=2e-4, atol=2e-4)


@pytest.mark.slow
def test_a_thousand_tasks_on_every_core_do_not_hang():
    """1,024 tasks of D = 8 and 128 points hung for good on 2 cores before the guide
    refined them in chunks (both pool threads waiting in jaxlib's ParallelBatchMap)."""
    code = (
        "import jax\n"
        "from iai_prob.numpyro import pretrained\n"
        "guide, params = pretrained.load('linear_regression')\n"
        "_, x, y = guide.family.sample(jax.random.PRNGKey(0), 1024, 128)\n"
        "state = guide.final_state(params, guide.prepare(x, y))\n"
        "assert state.loc.shape == (1024, 8)\n"
    )
    result = _run(code, os.environ.get("XLA_FLAGS", ""))
    assert result.returncode == 0, result.stderr[-2000:]
