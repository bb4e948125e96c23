"""Guards against two known XLA:CPU hazards of jaxlib 0.10.2.

**A miscompiled reduction.** jaxlib 0.10.2 offloads a fused ``broadcast → multiply →
reduce`` to YNNPACK (an ``__ynn_fusion``), and that fusion returns wrong sums once the
batch is large enough (jax-ml/jax#39103; jaxlib 0.10.1 is correct). The log joint of
every task family is exactly that pattern, vectorized over particles and tasks: in
float32, with 16 sigma points and more than 32 tasks of 64 points, ``jit`` returned log
joints off by hundreds of nats, so the damping rejected good steps and the refined means
landed up to 56 posterior standard deviations from the exact ones, silently.

Two defences, both cheap:

* :func:`disable_ynn_reduce_fusion` (run when :mod:`iai_prob.numpyro` is imported) adds
  ``--xla_cpu_experimental_ynn_fusion_type=-reduce`` to ``XLA_FLAGS`` while JAX's
  backend is not yet initialized, on jaxlib versions that know the flag;
* :func:`check_fused_reductions` (run once per process before the first refinement)
  compiles the failing pattern at a size that triggers it and compares it with NumPy
  in float64; on a mismatch it raises :class:`XLAMiscompilationError` with the fix,
  instead of letting a guide return wrong posteriors.

**A deadlock in batched LAPACK calls.** jaxlib's CPU LAPACK kernels (Cholesky,
triangular solves, LU, ``eigh``) split a batch of matrices over XLA's intra-op thread
pool once ``batch × cost`` reaches :data:`LAPACK_PARALLEL_WORK` FLOP (their own estimate,
at most ``5 D³`` per ``D × D`` matrix for those kernels) and wait for the pieces from the
pool thread that runs them. When as many such calls run at once as the pool has threads
(XLA runs independent operations concurrently), every thread waits and none is left to
do the work: the refinement of 1,024 tasks of ``D = 8`` hung for good on 2 cores
(``gdb``: both ``tf_XLAEigen`` threads in ``jax::ParallelBatchMap``, one under LU, one
under a triangular solve), while 1,000 tasks ran. :func:`lapack_serial_batch` gives the
largest batch a kernel of a given cost runs on its calling thread. The guide refines
more tasks than :func:`serial_task_limit` allows (its Cholesky, triangular-solve and LU
calls, ``D³`` FLOP each: 390 tasks for ``D = 8``) in chunks, one after the other, and
:func:`serial_eigh` decomposes its batches (``5 D³`` FLOP each) in pieces of at most 78
matrices for ``D = 8``; ``fit``, which cannot chunk a differentiated step, refuses more.
"""

from __future__ import annotations

import functools
import os

import numpy as np

__all__ = [
    "LAPACK_PARALLEL_WORK",
    "YNN_REDUCE_FLAG",
    "XLAMiscompilationError",
    "check_fused_reductions",
    "disable_ynn_reduce_fusion",
    "lapack_serial_batch",
    "serial_eigh",
    "serial_task_limit",
]

YNN_REDUCE_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
"""The ``XLA_FLAGS`` entry that keeps reductions out of YNNPACK fusions."""

_FIRST_WITH_FLAG = (0, 10, 2)

LAPACK_PARALLEL_WORK = 200_000
"""FLOP from which a jaxlib LAPACK kernel splits its batch over the intra-op pool
(``kMinWorkPerTask`` of ``jaxlib/cpu/lapack_kernels.cc``)."""


class XLAMiscompilationError(RuntimeError):
    """XLA compiled a reduction that returns wrong numbers on this machine."""


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def disable_ynn_reduce_fusion() -> bool:
    """Add :data:`YNN_REDUCE_FLAG` to ``XLA_FLAGS``; returns whether it is in effect.

    Leaves ``XLA_FLAGS`` alone when the user already chose a YNN fusion setting, when the
    installed jaxlib predates the flag (an unknown flag is fatal to XLA) or when the
    backend is already initialized (XLA reads the variable once).
    """
    import jaxlib
    from jax._src import xla_bridge

    flags = os.environ.get("XLA_FLAGS", "")
    if "ynn_fusion_type" in flags:
        return YNN_REDUCE_FLAG in flags.split()
    if _version(jaxlib.__version__) < _FIRST_WITH_FLAG or xla_bridge.backends_are_initialized():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_REDUCE_FLAG}".strip()
    return True


def _canary(particles, points, targets):
    """``Σ_n (y_n − x_nᵀ z_s)²`` per particle and task: the log joint's reduction pattern."""
    fitted = (points[None] * particles[:, :, None, :]).sum(-1)
    return ((targets[None] - fitted) ** 2).sum(-1)


@functools.cache
def check_fused_reductions() -> None:
    """Raise :class:`XLAMiscompilationError` if XLA miscompiles the log joint's reduction.

    Runs the pattern of jax-ml/jax#39103 once per process at 16 particles × 48 tasks ×
    64 points × 8 dimensions (the smallest failing sizes start at 33 tasks), in float32,
    against NumPy in float64.
    """
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    particles = rng.normal(size=(16, 48, 8)).astype(np.float32)
    points = rng.normal(size=(48, 64, 8)).astype(np.float32)
    targets = (3.0 * rng.normal(size=(48, 64))).astype(np.float32)
    compiled = np.asarray(
        jax.jit(_canary)(jnp.asarray(particles), jnp.asarray(points), jnp.asarray(targets))
    )
    exact = _canary(particles.astype(np.float64), points.astype(np.float64), targets)
    error = float(np.max(np.abs(compiled - exact) / np.abs(exact)))
    if not error < 1e-4:
        import jaxlib

        raise XLAMiscompilationError(
            f"jaxlib {jaxlib.__version__} compiles a fused reduction wrongly on this CPU "
            f"(relative error {error:.2g}; jax-ml/jax#39103), so the guide's log joints would "
            f"be wrong. Set XLA_FLAGS={YNN_REDUCE_FLAG} before JAX starts (before the first "
            "JAX computation, e.g. import iai_prob.numpyro first), or install another jaxlib "
            "(0.10.1 is not affected)"
        )


def lapack_serial_batch(cost: int) -> int:
    """The largest batch of matrices of ``cost`` FLOP each (by jaxlib's estimate: ``D³``
    for LU and a triangular solve with ``D`` right-hand sides, ``D³/3`` for Cholesky,
    ``5 D³`` for the symmetric ``eigh``) that a jaxlib LAPACK kernel runs on its calling
    thread: ``batch × cost`` below :data:`LAPACK_PARALLEL_WORK`."""
    return max(1, (LAPACK_PARALLEL_WORK - 1) // cost)


def serial_task_limit(latent_dim: int) -> int | None:
    """The most tasks the refinement may batch at once on this backend: the serial batch
    of its Cholesky, triangular-solve and LU calls (``D³`` FLOP each; 390 for ``D = 8``;
    its ``eigh`` calls go through :func:`serial_eigh`), or ``None`` off the CPU, where
    jaxlib's LAPACK kernels do not run."""
    import jax

    if jax.default_backend() != "cpu":
        return None
    return lapack_serial_batch(latent_dim**3)


def serial_eigh(matrix):
    """``jnp.linalg.eigh`` of ``(..., D, D)`` in pieces that stay on their calling thread
    (``jax.lax.map`` over chunks of :func:`lapack_serial_batch` ``(5 D³)`` matrices)."""
    import jax
    import jax.numpy as jnp

    dim = matrix.shape[-1]
    flat = matrix.reshape(-1, dim, dim)
    chunk = lapack_serial_batch(5 * dim**3)
    if flat.shape[0] <= chunk:
        eigenvalues, eigenvectors = jnp.linalg.eigh(flat)
    else:
        eigenvalues, eigenvectors = jax.lax.map(jnp.linalg.eigh, flat, batch_size=chunk)
    return (
        eigenvalues.reshape(*matrix.shape[:-1]),
        eigenvectors.reshape(matrix.shape),
    )
