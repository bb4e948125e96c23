"""Shared setup of the NumPyro-port tests.

XLA's CPU backend spends most of a test's time compiling the refinement scan (tens of
seconds at full optimization on a busy 2-core machine); these tests check results, not
speed, so they compile at optimization level 0 unless ``XLA_FLAGS`` is set already. The
flag must be set before JAX initializes its backend, hence here.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault(
    "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)

pytest.importorskip("jax")
pytest.importorskip("numpyro")
pytest.importorskip("equinox")
