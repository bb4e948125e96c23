"""The guard against jaxlib's miscompiled fused reduction (jax-ml/jax#39103)."""

from __future__ import annotations

import os
import subprocess
import sys

import jaxlib
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
            "from iai_prob.numpyro.models import LinearRegression\n"
            "from iai_prob.numpyro import IterativeAmortizedGuide\n"
            "family = LinearRegression(dim=2)\n"
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
