"""The convergence phase in JAX: safeguarded full-data steps to the refinement's fixed point.

The twin of :mod:`iai_prob.inference.convergence`, with the same decisions in the same
order (the math is there). In short: the learned refinement ``λ_0 … λ_K`` carries no
guarantee, so every default answer finishes at the Gaussian VI optimum of the full data
with steps that do not depend on anything learned:

    start   = per task the better by the full-data ELBO of λ_K and the damped-Newton
              Laplace point from its mean (:mod:`.laplace`)
    λ̂(λ)    = (ḡ + Λ̂μ, Λ̂),  Λ̂ = Π(−E_q ∇²f_D),  ḡ = E_q ∇f_D     (sigma points; CVI)
    r(λ)    = KL(q_λ̂ ‖ q_λ)                the fixed-point residual, nats
    λ ← (1 − ρ)λ + ρλ̂                     ρ = 1 first, halved where r did not halve

each step safeguarded by :func:`~iai_prob.numpyro.damping.damped_combine` (backtracking
on the full-data ELBO, then the target at the mean alone), until ``r < tolerance`` for
every task or ``max_steps`` steps (:class:`~iai_prob.convergence_settings.Convergence`).
Then the PSIS ``k̂`` of the final ``q`` against the full-data log joint (:func:`importance_check`).

The whole phase for a batch of tasks is one compiled program (``lax.while_loop`` over the
steps, the Laplace iterations and the line searches), compiled once per data shape; the
cap and the tolerance are inputs, so changing them does not recompile. The full data is
read in chunks of ``chunk_size`` points with weights ``|B_b|/N`` (``lax.map``), so memory
stays bounded for large ``N``. It runs in float64 under :func:`jax.enable_x64`, a
context local to the call: the user's global JAX configuration is left as it is.

The phase starts from the encoder's ``λ_0`` by default (the guide's :meth:`solve`;
``Convergence(refine_first=True)`` runs the learned pass first). A log joint of ``+inf``
(an overflowing density) counts as ``−inf`` in the line searches and the safeguard. The
target is always deterministic: a guide whose learned steps linearize at Monte
Carlo draws (``linearization="samples"``) finishes with sigma points.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import Counter
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from iai_prob.convergence_settings import Convergence
from iai_prob.moment_matching import moment_matched, vouched
from iai_prob.numpyro.damping import damped_combine, unscented_batch_elbo
from iai_prob.numpyro.laplace import laplace_point
from iai_prob.numpyro.log_joint import LogJoint
from iai_prob.numpyro.posteriors import GaussianFamily, gaussian_kl
from iai_prob.numpyro.refinement import check_state
from iai_prob.numpyro.signals import curvature_signal, natural_gradient_target
from iai_prob.numpyro.task_data import TaskData
from iai_prob.numpyro.updates import combine_natural
from iai_prob.numpyro.xla_guard import serial_task_limit
from iai_prob.pareto_smoothing import smooth_finite_columns
from iai_prob.posterior_status import KHAT_DRAW_SETS, in_notice_band
from iai_prob.refinement_state import RefinementState
from iai_prob.refiner_options import RefinerOptions

__all__ = [
    "TRACE_COUNTS",
    "FullData",
    "Phase",
    "converge",
    "finish",
    "importance_check",
    "task_keys",
]

TRACE_COUNTS: Counter = Counter()
"""How many times the compiled phase was traced, by name (a test checks the reuse)."""


class FullData(eqx.Module):
    """The whole dataset as weighted chunks, with the interface of a
    :class:`~iai_prob.numpyro.log_joint.LogJoint` bound to it (``batch`` is ignored).

    :ivar data: the dataset (``total_points = N``).
    :ivar index: ``(C, B)`` point indices of the chunks (padded), or ``None``: one chunk.
    :ivar mask: ``(C, B)`` validity of ``index``.
    :ivar log_joint: the model's log-joint evaluator.
    """

    data: TaskData
    index: jax.Array | None
    mask: jax.Array | None
    log_joint: LogJoint = eqx.field(static=True)

    @classmethod
    def in_memory(cls, data: TaskData, log_joint: LogJoint, chunk_size: int) -> FullData:
        """``data`` read ``chunk_size`` points at a time (the last chunk padded)."""
        if data.size <= chunk_size:
            return cls(data, None, None, log_joint)
        num_chunks = math.ceil(data.size / chunk_size)
        flat = np.arange(num_chunks * chunk_size)
        mask = (flat < data.size).reshape(num_chunks, chunk_size)
        index = np.where(mask, flat.reshape(num_chunks, chunk_size), 0)
        return cls(data, jnp.asarray(index, jnp.int32), jnp.asarray(mask), log_joint)

    def _summed(self, evaluate):
        """``Σ_b (|B_b|/N) evaluate(B_b)`` (a pytree of arrays), one chunk at a time."""
        if self.index is None:
            return evaluate(self.data)

        def chunk(inputs):
            part = self.data.subset(*inputs)
            weight = part.num_points / self.data.total_points
            return jax.tree_util.tree_map(lambda value: weight * value, evaluate(part))

        parts = jax.lax.map(chunk, (self.index, self.mask))
        return jax.tree_util.tree_map(lambda value: value.sum(0), parts)

    def per_particle(self, z, batch=None):
        """``f_D`` at particles ``z`` ``(S, T, D)``: ``(S, T)``."""
        return self._summed(lambda part: self.log_joint.per_particle(z, part))

    def per_task_mean(self, z, batch=None):
        """``f_D`` averaged over the particles, per task ``(T,)`` (the ELBOs of the
        safeguard); ``−inf`` where it is not finite: a density that overflows (``+inf``)
        is no better than NaN and must not win a step."""
        value = self.per_particle(z).mean(0)
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)

    def value_and_grad(self, z, batch=None):
        """``(f_D, ∇f_D)`` at particles ``z`` ``(S, T, D)``."""
        return self._summed(lambda part: self.log_joint.value_and_grad(z, part))

    def hessian(self, z, batch=None):
        """``∇²f_D`` at particles ``z`` ``(S, T, D)``: ``(S, T, D, D)``."""
        return self._summed(lambda part: self.log_joint.hessian(z, part))


class Phase(NamedTuple):
    """The phase's answer per task: the state, converged ``(T,)``, full-data steps
    ``(T,)``, the last residual ``(T,)`` (nats) and ``k̂`` ``(T,)`` (NaN until computed)."""

    loc: jax.Array
    precision: jax.Array
    converged: jax.Array
    steps: jax.Array
    residual: jax.Array
    khat: jax.Array | np.ndarray | None = None


def _target(full, loc, precision, family, min_precision, scheme):
    signal = curvature_signal(full, loc, precision, None, scheme)
    return natural_gradient_target(signal, loc, family, min_precision)


def _residual(loc, precision, target):
    """``KL(q_target ‖ q)`` per task; ``inf`` where the target is not a valid state."""
    ones = jnp.ones_like(loc[:, 0])
    target_loc, target_precision = combine_natural(loc, precision, *target, ones)
    valid = jnp.isfinite(target_loc).all(-1) & jnp.isfinite(
        jnp.linalg.cholesky(target_precision)
    ).all((-1, -2))
    eye = jnp.eye(loc.shape[-1], dtype=loc.dtype)
    safe_loc = jnp.where(valid[:, None], target_loc, loc)
    safe_precision = jnp.where(valid[:, None, None], target_precision, eye)
    kl = gaussian_kl(safe_loc, safe_precision, loc, precision)
    return jnp.where(valid, jnp.nan_to_num(kl, nan=jnp.inf), jnp.inf)


def _best_start(full, loc, precision, family, min_precision):
    """Per task, the better by the full-data ELBO of ``(loc, precision)`` and the Laplace
    point reached by damped Newton from ``loc`` (to its own tolerance, as
    :func:`iai_prob.inference.convergence._best_start` says why)."""
    laplace_loc, laplace_precision = laplace_point(full, loc, family, min_precision=min_precision)
    laplace_precision = family.project(laplace_precision)
    own = unscented_batch_elbo(full, loc, precision, None)
    other = unscented_batch_elbo(full, laplace_loc, laplace_precision, None)
    take = other > own
    return (
        jnp.where(take[:, None], laplace_loc, loc),
        jnp.where(take[:, None, None], laplace_precision, precision),
    )


class _Carry(NamedTuple):
    step: jax.Array
    loc: jax.Array
    precision: jax.Array
    converged: jax.Array
    steps: jax.Array
    rho: jax.Array
    previous: jax.Array
    base: jax.Array
    residual: jax.Array
    stop: jax.Array


@eqx.filter_jit
def _converge(loc, precision, full, family, max_steps, tolerance, min_precision, scheme):
    TRACE_COUNTS["converge"] += 1
    loc, precision = _best_start(full, loc, precision, family, min_precision)
    num_tasks = loc.shape[0]

    def body(carry: _Carry) -> _Carry:
        target = _target(full, carry.loc, carry.precision, family, min_precision, scheme)
        residual = _residual(carry.loc, carry.precision, target)
        converged = carry.converged | (residual < tolerance)
        stop = converged.all() | (carry.step >= max_steps)

        def advance():
            rho = jnp.where(
                residual > 0.5 * carry.previous, jnp.maximum(carry.rho / 2, 0.05), carry.rho
            )

            def newton():
                return _target(full, carry.loc, carry.precision, family, min_precision, "mean")

            new_loc, new_precision, _ = damped_combine(
                carry.loc,
                carry.precision,
                rho,
                [lambda: target, newton],
                None,
                full,
                base=carry.base,
                tolerance=1e-6,
            )
            moved = ~converged
            loc = jnp.where(moved[:, None], new_loc, carry.loc)
            precision = jnp.where(
                moved[:, None, None], family.project(new_precision), carry.precision
            )
            base = unscented_batch_elbo(full, loc, precision, None)
            return loc, precision, carry.steps + moved, rho, residual, base

        kept = (carry.loc, carry.precision, carry.steps, carry.rho, carry.previous, carry.base)
        loc, precision, steps, rho, previous, base = jax.lax.cond(stop, lambda: kept, advance)
        return _Carry(
            carry.step + 1, loc, precision, converged, steps, rho, previous, base, residual, stop
        )

    inf = jnp.full(num_tasks, jnp.inf, loc.dtype)
    start = _Carry(
        jnp.asarray(0),
        loc,
        precision,
        jnp.zeros(num_tasks, bool),
        jnp.zeros(num_tasks, jnp.int32),
        jnp.ones(num_tasks, loc.dtype),
        inf,
        unscented_batch_elbo(full, loc, precision, None),
        inf,
        jnp.asarray(False),
    )
    end = jax.lax.while_loop(lambda carry: ~carry.stop, body, start)
    return Phase(end.loc, end.precision, end.converged, end.steps, end.residual)


def converge(
    loc,
    precision,
    full: FullData,
    family: GaussianFamily,
    convergence: Convergence,
    options: RefinerOptions | None = None,
) -> Phase:
    """Run the convergence phase from ``(loc, precision)`` ``(T, D)``, ``(T, D, D)`` over
    ``full`` (see module docstring), with the refiner's precision floor and linearization
    (``options``; the defaults when ``None``); ``k̂`` is left ``None``."""
    options = options or RefinerOptions()
    scheme = "mean" if options.linearization == "mean" else "sigma_points"
    return _converge(
        loc,
        precision,
        full,
        family,
        jnp.asarray(convergence.max_steps),
        jnp.asarray(convergence.tolerance, loc.dtype),
        options.min_precision,
        scheme,
    )


def task_keys(data: TaskData, key: jax.Array) -> jax.Array:
    """One key per task ``(T, …)``, ``key`` folded with an exact integer fingerprint of
    the task's own data (its features' float32 bit patterns, weighted by feature and
    summed modulo 2³² over its valid points, padding left out) modulo
    :data:`~iai_prob.posterior_status.KHAT_DRAW_SETS`. A task gets the same key alone and
    padded in a batch; two datasets share one only by chance, so their ``k̂`` do not
    share one set of draws' error (see :func:`iai_prob.inference.convergence.task_seeds`)."""
    features = data.features.astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(features, jnp.uint32)  # (T, N, F)
    valid = jnp.broadcast_to(data.mask, bits.shape[:2])
    if data.task_mask is not None:
        valid = valid & data.task_mask
    weights = jnp.arange(1, bits.shape[-1] + 1, dtype=jnp.uint32)
    fingerprints = jnp.where(valid[..., None], bits * weights, 0).sum((1, 2), dtype=jnp.uint32)
    fingerprints = fingerprints % KHAT_DRAW_SETS
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, fingerprints)


@eqx.filter_jit
def _log_weights(loc, precision, full, family, key, num_draws: int, per_group: int):
    """The draws ``z_s`` ``(S, T, D)`` and ``f_D(z_s) − log q(z_s)`` ``(S, T)`` for
    ``num_draws`` draws, ``per_group`` at a time; ``f_D`` in the dtype of ``full``'s data
    (the draws and ``log q`` in ``loc``'s)."""
    TRACE_COUNTS["khat"] += 1
    posterior = family.distribution(loc, precision)

    # each task's own draws from its own data: its k̂ is the one it gets alone, in any batch
    def own_draws(task_loc, task_precision, task_key):
        return family.distribution(task_loc, task_precision).sample(task_key, (num_draws,))

    draws = jax.vmap(own_draws, out_axes=1)(loc, precision, task_keys(full.data, key))
    log_q = posterior.log_prob(draws)
    num_groups = math.ceil(num_draws / per_group)
    padded = jnp.concatenate(
        [draws, jnp.broadcast_to(loc, (num_groups * per_group - num_draws, *loc.shape))]
    )
    grouped = padded.reshape(num_groups, per_group, *loc.shape).astype(full.data.features.dtype)
    log_p = jax.lax.map(full.per_particle, grouped).reshape(-1, loc.shape[0])[:num_draws]
    return draws, log_p.astype(log_q.dtype) - log_q


def importance_check(
    loc,
    precision,
    full: FullData,
    family: GaussianFamily,
    num_draws: int,
    seed: int,
    max_elements: int = 1 << 22,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSIS ``k̂`` ``(T,)`` of ``q = N(loc, precision⁻¹)`` against the full data from
    ``num_draws`` seeded draws, evaluated in groups of draws that touch at most
    ``max_elements`` data points each, with the draws ``(S, T, D)`` and their smoothed
    log weights ``(S, T)``: ``(k̂, draws, log weights)``. ``f_D`` is evaluated in the dtype
    of ``full``'s data: :func:`finish` passes the guide's float32, which halves the cost
    of the thousand full-data evaluations, while the draws and ``log q`` keep the phase's
    float64 (as :func:`iai_prob.inference.convergence.importance_check`)."""
    num_tasks = loc.shape[0]
    per_group = min(num_draws, max(1, max_elements // max(1, full.data.size * num_tasks)))
    key = jax.random.PRNGKey(seed)
    draws, log_weights = _log_weights(loc, precision, full, family, key, num_draws, per_group)
    # equal weights (q = p to float precision) give k̂ = 0 there
    smoothed, khat = smooth_finite_columns(np.asarray(log_weights, np.float64))
    return khat, np.asarray(draws, np.float64), smoothed


def _khat_of(loc, precision, *, full, family, num_draws: int, seed: int, dtype) -> np.ndarray:
    """:func:`importance_check`'s ``k̂`` of NumPy ``(loc, precision)`` taken in ``dtype``."""
    loc, precision = jnp.asarray(loc, dtype), jnp.asarray(precision, dtype)
    return importance_check(loc, precision, full, family, num_draws, seed)[0]


def _cast(data: TaskData, dtype) -> TaskData:
    """``data`` with every floating-point array in ``dtype`` (integer and boolean
    arguments, e.g. category labels, kept)."""

    def cast(leaf):
        floating = isinstance(leaf, jax.Array | np.ndarray) and jnp.issubdtype(
            leaf.dtype, jnp.floating
        )
        return jnp.asarray(leaf, dtype) if floating else leaf

    return jax.tree_util.tree_map(cast, data)


def _tasks(data: TaskData, index: slice) -> TaskData:
    """The tasks ``index`` of ``data`` (task-major storage)."""
    args, kwargs = data.task(index)
    return TaskData(
        args,
        kwargs,
        data.features[index],
        data.mask,
        data.total_points,
        data.axes,
        data.batched,
        None if data.task_mask is None else data.task_mask[index],
        None if data.task_points is None else data.task_points[index],
    )


def finish(
    state: RefinementState,
    data: TaskData,
    log_joint: LogJoint,
    family: GaussianFamily,
    convergence: Convergence,
    options: RefinerOptions | None = None,
    *,
    seed: int = 0,
) -> tuple[RefinementState, Phase]:
    """The convergence phase and ``k̂`` for every task of ``data`` from the learned
    ``state``: ``(the final state in the state's dtype, its Phase with NumPy fields)``.

    Runs in float64 (``convergence.float64``) inside :func:`jax.enable_x64`, and over at
    most :func:`~iai_prob.numpyro.xla_guard.serial_task_limit` tasks at a time (each
    task's answer is a function of its own data alone).
    """
    dtype = state.loc.dtype
    matches = convergence.moment_match and family.name == "full_rank"
    wide = contextlib.nullcontext() if not convergence.float64 else jax.enable_x64(True)
    with wide:
        phase_dtype = jnp.float64 if convergence.float64 else dtype
        num_tasks = data.num_tasks
        chunk = serial_task_limit(state.loc.shape[-1]) or num_tasks
        parts = []
        for start in range(0, num_tasks, chunk):
            index = slice(start, start + chunk)
            tasks = data if chunk >= num_tasks else _tasks(data, index)
            full = FullData.in_memory(_cast(tasks, phase_dtype), log_joint, convergence.chunk_size)
            phase = converge(
                jnp.asarray(state.loc[index], phase_dtype),
                jnp.asarray(state.precision[index], phase_dtype),
                full,
                family,
                convergence,
                options,
            )
            evaluated = FullData(_cast(full.data, dtype), full.index, full.mask, log_joint)
            khat, draws, log_weights = importance_check(
                phase.loc, phase.precision, evaluated, family, convergence.khat_draws, seed
            )
            loc, precision = np.asarray(phase.loc), np.asarray(phase.precision)
            band = in_notice_band(khat, np.asarray(phase.converged))
            if matches and band.any():  # the VI optimum usable but not close
                matched = moment_matched(loc, precision, draws, log_weights, band)
                khat_of = functools.partial(  # the moved answers' own k̂, the next seed
                    _khat_of,
                    full=evaluated,
                    family=family,
                    num_draws=convergence.khat_draws,
                    seed=seed + 1,
                    dtype=loc.dtype,
                )
                loc, precision, khat = vouched((loc, precision, khat), matched, khat_of)
            parts.append(
                Phase(
                    loc,
                    precision,
                    np.asarray(phase.converged),
                    np.asarray(phase.steps),
                    np.asarray(phase.residual),
                    khat,
                )
            )
    phase = Phase(*(np.concatenate(field) for field in zip(*parts, strict=True)))
    steps = int(phase.steps.max()) if phase.steps.size else 0
    final = RefinementState(
        jnp.asarray(phase.loc.astype(dtype)),
        jnp.asarray(phase.precision.astype(dtype)),
        state.step + steps,
        state.points_seen + steps * data.total_points,
    )
    return check_state(final), phase
