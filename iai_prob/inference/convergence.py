"""The convergence phase: safeguarded full-data steps to the refinement's fixed point.

The learned refinement ``λ_0 … λ_K`` (:mod:`.refinement`) is fast but carries no
guarantee: an encoder outside its training distribution (wide priors, raw units, ``N``
far from training) starts far away, mini-batch noise keeps a constant step jittering,
and a meta-trained step can freeze (learned step sizes near zero). Its fixed point is
the Gaussian VI optimum of the full data, so the default answer finishes there with
steps that do not depend on anything learned (DESIGN.md, "Converged wherever it
starts"; Heaton et al. 2023, safeguarded learned optimization):

    λ̂(λ)    = (η_prior-free CVI target of the FULL data at λ)        (Khan & Lin 2017)
            = (ḡ + Λ̂μ, Λ̂),  Λ̂ = Π(−E_q ∇²f_D),  ḡ = E_q ∇f_D   (sigma points)
    r(λ)    = KL(q_λ̂ ‖ q_λ)                    the fixed-point residual, nats
    λ ← (1 − ρ)λ + ρλ̂                         ρ = 1 first (a Newton step on E_q f_D)

Each step is safeguarded as :func:`~iai_prob.inference.damping.damped_combine` does:
the full-data ELBO (sigma-point quadrature) may not decrease; a rejected step backtracks
``ρ ← ρ/4`` and then falls back to the target linearized at the mean alone (a damped
Newton step on ``f_D``), so every accepted step is an ascent and the phase cannot
diverge. A step (:func:`cvi_step`: the target, the residual, the step size and every
backtracked candidate's ELBO at once) is one solver step, so a compiled model runs one
kernel per step; on a small dataset the dispatch of each evaluation, not its arithmetic,
is the cost. A task whose residual did not halve in a step halves its ``ρ`` (an oscillating
non-conjugate target settles). A task is **converged** when ``r(λ) < tolerance``; the
phase stops when every task is, or after ``max_steps`` steps (the user's cap). For a
conjugate model the first target is the exact posterior, so it converges in one step
and one check, whatever the encoder said.

The full data is read in chunks of ``chunk_size`` points with weights ``|B_b|/N``:
``Σ_b (|B_b|/N) f_{B_b} = f_D`` exactly (each chunk's likelihood is scaled by ``N/|B_b|``
and the prior counted once overall), so memory stays bounded for large ``N``.

Every answer carries a :class:`~iai_prob.posterior_status.PosteriorStatus`:
converged or not, the passes used, the last residual and the PSIS ``k̂`` of the final
``q`` against the full-data log joint (:func:`importance_check`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from iai_prob.convergence_settings import Convergence
from iai_prob.inference.damping import Backtracked, backtracked_combine, unscented_batch_elbo
from iai_prob.inference.laplace import laplace_point
from iai_prob.inference.posteriors import GaussianFamily, covariance_tril, gaussian_kl
from iai_prob.inference.refinement import check_state
from iai_prob.inference.signals import (
    curvature_signal,
    difference_spread,
    natural_gradient_target,
    sigma_point_target,
)
from iai_prob.inference.task_data import TaskData
from iai_prob.inference.updates import combine_natural
from iai_prob.pareto_smoothing import smooth_finite_columns
from iai_prob.posterior_status import KHAT_DRAW_SETS
from iai_prob.refinement_state import RefinementState
from iai_prob.refiner_options import RefinerOptions

__all__ = [
    "CviStep",
    "FullData",
    "ImportanceCheck",
    "converge",
    "cvi_step",
    "gaussian_log_density",
    "importance_check",
    "task_seeds",
]


class FullData:
    """The whole dataset as weighted chunks, with the interface of a
    :class:`~iai_prob.inference.log_joint.LogJoint` bound to it (``batch`` is ignored).

    :param chunks: a list of :class:`TaskData` chunks (each with ``total_points = N``),
        or a callable returning a fresh iterable of them (a stream: every evaluation is
        one pass over it).
    :param log_joint: the model's log-joint evaluator.
    :param int num_points: ``N``.
    """

    def __init__(self, chunks, log_joint, num_points: int):
        self.chunks = chunks
        self.log_joint = log_joint
        self.num_points = num_points

    @classmethod
    def in_memory(cls, data: TaskData, log_joint, chunk_size: int) -> FullData:
        """A dataset held in memory, read ``chunk_size`` points at a time."""
        if data.num_points <= chunk_size:
            return cls([data], log_joint, data.num_points)
        indices = torch.arange(data.num_points).split(chunk_size)
        return cls([data.subset(index) for index in indices], log_joint, data.num_points)

    def to_dtype(self, dtype: torch.dtype) -> FullData:
        """The same data with floating-point tensors in ``dtype``."""
        chunks = self.chunks
        if callable(chunks):
            return FullData(
                lambda: (chunk.to_dtype(dtype) for chunk in chunks()),
                self.log_joint,
                self.num_points,
            )
        return FullData([c.to_dtype(dtype) for c in chunks], self.log_joint, self.num_points)

    @property
    def single_chunk(self) -> TaskData | None:
        """The data when held in memory as one chunk (weight 1), else ``None``."""
        chunks = self.chunks
        return chunks[0] if isinstance(chunks, list) and len(chunks) == 1 else None

    def weighted(self):
        """Yield ``(|B_b| / N, B_b)`` for every chunk."""
        chunks = self.chunks() if callable(self.chunks) else self.chunks
        for chunk in chunks:
            yield chunk.num_points / self.num_points, chunk

    def per_particle(self, z: torch.Tensor, batch=None) -> torch.Tensor:
        """``f_D`` at particles ``z`` ``(S, T, D)``: ``(S, T)``."""
        if self.single_chunk is not None:  # the usual case: no weights to apply
            return self.log_joint.per_particle(z, self.single_chunk)
        return sum(
            weight * self.log_joint.per_particle(z, chunk) for weight, chunk in self.weighted()
        )

    def per_task_mean(self, z: torch.Tensor, batch=None) -> torch.Tensor:
        """``f_D`` averaged over the particles, per task ``(T,)``."""
        return self.per_particle(z).mean(0)

    def value_and_grad(self, z: torch.Tensor, batch=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f_D, ∇f_D)`` at particles ``z`` ``(S, T, D)``, summed over the weighted chunks."""
        if self.single_chunk is not None:
            return self.log_joint.value_and_grad(z, self.single_chunk)
        value = grad = 0
        for weight, chunk in self.weighted():
            chunk_value, chunk_grad = self.log_joint.value_and_grad(z, chunk)
            value, grad = value + weight * chunk_value, grad + weight * chunk_grad
        return value, grad

    def solve(self, function, state: tuple, options: tuple = ()):
        """A solver step ``function(f_D, *state, *options, traceable=…)``
        (:meth:`~iai_prob.inference.log_joint.LogJoint.solve`): one compiled kernel where
        the data is one chunk, else the step run on the chunks' weighted sums."""
        if self.single_chunk is not None:
            return self.log_joint.solve(function, self.single_chunk, state, options)
        return function(self, *state, *options, traceable=False)


ACCEPT_TOLERANCE = 1e-6
"""A step is accepted when it lowers the full-data ELBO by at most this fraction of it."""

MAX_BACKTRACKS = 6
"""Step sizes ``ρ/4^k`` tried on a target, ``k ≤ MAX_BACKTRACKS``, before the fallback."""

AT_ONCE_SIZE = 4096
"""Data points × tasks × latent dims (a candidate's sigma points number ``2D``) up to
which a step evaluates every candidate of its searches at once (all backtracked step
sizes, all Newton step lengths): there a candidate's arithmetic costs less than its
dispatch. Above it the searches evaluate the likeliest candidates at once and continue
one at a time where they must. Measured a posterior, every candidate at once against one
at a time: Grunfeld (20 × 4 = 80) 18.5 against 24.5 ms, diabetes (442 × 5 = 2,210) 14.3
against 17.1 ms, breast cancer (569 × 4) 16.7 against 18.8 ms; anes96 (944 × 7 = 6,608)
45.5 against 28.4 ms, the shipped logistic guide (1,024 × 8) 37.9 against 20.5 ms, the
Poisson regression (2,000 × 9) 60 against 45 ms."""


class CviStep(NamedTuple):
    """One step of the phase per task (:func:`cvi_step`)."""

    residual: torch.Tensor  # (T,): KL(q_target ‖ q) at the step's start
    step_size: torch.Tensor  # (T,): ρ, halved where the residual did not halve
    proposal: Backtracked  # the backtracked step (the start where none was accepted)
    target: tuple[torch.Tensor, torch.Tensor]  # (η̂, Λ̂)


def cvi_step(
    log_joint,
    loc: torch.Tensor,
    precision: torch.Tensor,
    step_size: torch.Tensor,
    previous: torch.Tensor,
    base: torch.Tensor,
    family: GaussianFamily,
    min_precision: float,
    scheme: str,
    max_backtracks: int = MAX_BACKTRACKS,
    *,
    traceable: bool = False,
) -> CviStep:
    """One full-data step of the phase from ``N(loc, precision⁻¹)`` (whose ELBO is
    ``base``; ``previous``: the last residual) as one solver step
    (:meth:`FullData.solve`): the CVI target ``λ̂``, the residual, the step size, and
    ``(1 − ρ)λ + ρλ̂`` backtracked on the ELBO, every step size ``ρ/4^k``
    (``k ≤ max_backtracks``) at once
    (:func:`~iai_prob.inference.damping.backtracked_combine`)."""
    target = _cvi_target(log_joint, loc, precision, family, min_precision, scheme, traceable)
    residual = _residual(loc, precision, *target)
    step_size = torch.where(residual > 0.5 * previous, (step_size / 2).clamp_min(0.05), step_size)
    proposal = backtracked_combine(
        log_joint,
        loc,
        precision,
        step_size,
        target,
        base,
        max_backtracks=max_backtracks,
        tolerance=ACCEPT_TOLERANCE,
    )
    return CviStep(residual, step_size, proposal, target)


def _at_once(full: FullData, num_tasks: int, dim: int) -> bool:
    size = full.num_points * num_tasks * dim
    return full.single_chunk is not None and size <= AT_ONCE_SIZE


def _cvi_target(log_joint, loc, precision, family, min_precision, scheme, traceable=False):
    """The CVI target ``(η̂, Λ̂)`` of ``log_joint`` at ``N(loc, precision⁻¹)``;
    ``scheme="mean"`` linearizes at the mean, the Hessian by central differences of
    gradients; ``"samples"`` (not traceable) differentiates twice at random draws."""
    if scheme == "samples":
        signal = curvature_signal(log_joint, loc, precision, None, scheme)
        return natural_gradient_target(signal, loc, family, min_precision)
    spread = difference_spread(loc.dtype) if scheme == "mean" else None
    target = sigma_point_target(
        log_joint, loc, precision, family, min_precision, spread, traceable=traceable
    )
    return target.linear, target.precision


def _residual(loc, precision, target_linear, target_precision) -> torch.Tensor:
    """``KL(q_target ‖ q)`` per task; ``inf`` where the target is not a valid state."""
    ones = torch.ones_like(loc[:, 0])
    target_loc, target_precision = combine_natural(
        loc, precision, target_linear, target_precision, ones
    )
    valid = torch.isfinite(target_loc).all(-1) & (
        torch.linalg.cholesky_ex(target_precision)[1] == 0
    )
    eye = torch.eye(loc.shape[-1], dtype=loc.dtype, device=loc.device)
    safe_loc = torch.where(valid[:, None], target_loc, loc)
    safe_precision = torch.where(valid[:, None, None], target_precision, eye)
    kl = gaussian_kl(safe_loc, safe_precision, loc, precision)
    return torch.where(valid, torch.nan_to_num(kl, nan=torch.inf), torch.inf)


def _retried(full, state, step, base, retry, tried, family, min_precision) -> Backtracked:
    """Where no step size up to ``ρ/4^tried`` of the CVI target was accepted (``retry``):
    the smaller ones left, then the target linearized at the mean alone (a damped Newton
    step on ``f_D``), backtracked the same way."""
    proposal = step.proposal
    attempts = []
    if tried < MAX_BACKTRACKS:
        attempts.append(
            (step.step_size * 0.25 ** (tried + 1), step.target, MAX_BACKTRACKS - tried - 1)
        )
    newton = _cvi_target(full, state.loc, state.precision, family, min_precision, "mean")
    attempts.append((step.step_size, newton, MAX_BACKTRACKS))
    for step_size, target, backtracks in attempts:
        found = backtracked_combine(
            full,
            state.loc,
            state.precision,
            step_size,
            target,
            base,
            max_backtracks=backtracks,
            tolerance=ACCEPT_TOLERANCE,
        )
        proposal = Backtracked(
            *(_where_tasks(retry, new, old) for new, old in zip(found, proposal, strict=True))
        )
        retry = retry & ~found.accepted
        if not bool(retry.any()):
            break
    return proposal


def _where_tasks(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` for the tasks in ``mask`` ``(T,)``, else ``old`` (any trailing shape)."""
    return torch.where(mask.reshape(-1, *(1,) * (new.dim() - 1)), new, old)


def _best_start(state, full: FullData, family, min_precision):
    """Per task, the better by the full-data ELBO of ``state`` and the Laplace point
    reached by damped Newton from its mean (:mod:`.laplace`), and that ELBO.

    Newton runs to its own tight tolerance (a decrement of 1e-6 nats), not the phase's:
    stopped at 1e-3 nats (tried), the answer came to depend on the path to the start, and
    a Gaussian-mixture dataset padded in a batch and alone differed by 2e-4 in one mean
    (the suite's padded-batch test), past the 1e-4 that padded batches promise."""
    laplace = laplace_point(
        full,
        state.loc,
        family,
        state.precision,
        min_precision=min_precision,
        at_once=_at_once(full, *state.loc.shape),
    )
    laplace = laplace._replace(precision=family.project(laplace.precision))
    own, other = unscented_batch_elbo(  # both candidates' sigma points evaluated at once
        full,
        torch.stack([state.loc, laplace.loc]),
        torch.stack([state.precision, laplace.precision]),
        None,
    )
    take = other > own
    start = state._replace(
        loc=_where_tasks(take, laplace.loc, state.loc),
        precision=_where_tasks(take, laplace.precision, state.precision),
    )
    return start, torch.where(take, other, own)


@torch.no_grad()
def converge(
    state: RefinementState,
    full: FullData,
    family: GaussianFamily,
    convergence: Convergence,
    options: RefinerOptions | None = None,
):
    """Run the convergence phase from ``state`` (see module docstring), with the refiner's
    precision floor and linearization (``options``; the defaults when ``None``).

    :returns: ``(state, converged (T,), steps (T,), residual (T,))``.
    """
    options = options or RefinerOptions()
    min_precision, linearization = options.min_precision, options.linearization
    state, base = _best_start(state, full, family, min_precision)
    num_tasks = state.loc.shape[0]
    converged = torch.zeros(num_tasks, dtype=torch.bool, device=state.loc.device)
    steps = torch.zeros(num_tasks, dtype=torch.long, device=state.loc.device)
    step_size = torch.ones(num_tasks, dtype=state.loc.dtype, device=state.loc.device)
    previous = torch.full_like(step_size, torch.inf)
    backtracks = MAX_BACKTRACKS if _at_once(full, *state.loc.shape) else 0
    step_options = (family, min_precision, linearization, backtracks)
    for step in range(convergence.max_steps + 1):
        tensors = (state.loc, state.precision, step_size, previous, base)
        if linearization == "samples":  # random draws and double differentiation: eager
            result = cvi_step(full, *tensors, *step_options)
        else:  # one compiled kernel per step once compiled
            result = full.solve(cvi_step, tensors, step_options)
        residual = result.residual
        converged = converged | (residual < convergence.tolerance)
        if bool(converged.all()) or step == convergence.max_steps:
            break
        step_size, previous, proposal = result.step_size, residual, result.proposal
        retry = ~proposal.accepted & ~converged
        if bool(retry.any()):
            proposal = _retried(full, state, result, base, retry, backtracks, family, min_precision)
        moved = ~converged
        new = RefinementState(
            _where_tasks(moved, proposal.loc, state.loc),
            _where_tasks(moved, family.project(proposal.precision), state.precision),
            state.step + 1,
            state.points_seen + full.num_points,
        )
        state = check_state(new)
        base = torch.where(moved, proposal.value, base)
        steps = steps + moved.long()
    return state, converged, steps, residual


def gaussian_log_density(noise: torch.Tensor, tril: torch.Tensor) -> torch.Tensor:
    """``log q(μ + L ε_s)`` ``(S, T)`` of ``q = N(μ, L Lᵀ)`` from the standard draws ``ε``
    (``(S, T, D)``: each task's own; ``(S, D)``: the same for every task) and the factors
    ``L`` ``(T, D, D)``, without solving for ``ε`` again:
    ``−½ ‖ε_s‖² − Σ_i log L_ii − (D/2) log 2π``."""
    log_det = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    norm = noise.pow(2).sum(-1)
    if noise.dim() == 2:
        norm = norm[:, None]
    return -0.5 * norm - log_det - 0.5 * noise.shape[-1] * math.log(2 * math.pi)


def task_seeds(full: FullData, seed: int) -> list[int]:
    """One seed per task, from ``seed`` and the task's own data: an exact integer
    fingerprint of its features (their float32 bit patterns, weighted by feature and
    summed over its valid points of the first chunk, padding left out), taken modulo
    :data:`~iai_prob.posterior_status.KHAT_DRAW_SETS`.

    The sum of integers is exact in any order, so a task gets the same seed alone and
    padded in a batch, and two datasets share one only by chance (1 in 256). With one
    set of draws for every dataset, the ``k̂`` of every dataset shared that set's error:
    on the eleven Grunfeld firms of the real-model suite, nine firms whose ``k̂`` from
    independent sets of 1,000 draws has a median of 0.43 (0.08 to 0.62 over 20 sets) all
    reported 0.23 ± 0.01, and a firm whose median is 0.77 reported 0.55."""
    _, chunk = next(iter(full.weighted()))
    features = chunk.features.detach().to(torch.float32).contiguous()
    bits = features.view(torch.int32).long()  # (T, n, F)
    if chunk.mask is not None:
        bits = bits * chunk.mask[..., None].long()
    weights = torch.arange(1, bits.shape[-1] + 1, device=bits.device)
    fingerprints = (bits * weights).sum((1, 2)).tolist()
    return [hash((seed, fingerprint % KHAT_DRAW_SETS)) % (1 << 63) for fingerprint in fingerprints]


def _task_noise(seeds: list[int], num_draws: int, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws ``(S, T, D)``, task ``t``'s from a generator seeded with
    ``seeds[t]`` (each distinct seed drawn once), in ``like``'s dtype and device."""
    sets = {
        task_seed: torch.randn(
            num_draws,
            like.shape[-1],
            dtype=like.dtype,
            device=like.device,
            generator=torch.Generator(device=like.device).manual_seed(task_seed),
        )
        for task_seed in set(seeds)
    }
    return torch.stack([sets[task_seed] for task_seed in seeds], dim=1)


class ImportanceCheck(NamedTuple):
    """The PSIS check of an answer (:func:`importance_check`)."""

    khat: np.ndarray  # (T,): inf where a draw's log joint was not finite
    draws: torch.Tensor  # (S, T, D): z_s = μ + L ε_s
    log_weights: np.ndarray  # (S, T): smoothed, normalized; nan where k̂ is inf


@torch.no_grad()
def importance_check(
    loc: torch.Tensor,
    precision: torch.Tensor,
    full: FullData,
    num_draws: int,
    seed: int,
    max_elements: int = 1 << 22,
    log_p_dtype: torch.dtype | None = None,
) -> ImportanceCheck:
    """PSIS ``k̂`` ``(T,)`` of ``q = N(loc, precision⁻¹)`` (``(T, D)``, ``(T, D, D)``) against
    the full data, with its draws and smoothed weights: ``log w_s = f_D(z_s) − log q(z_s)``
    for ``num_draws`` draws ``z_s = μ + L ε_s`` (``L Lᵀ = Λ⁻¹``; each task's ``ε_s`` from a
    generator seeded by ``seed`` and its own data (:func:`task_seeds`), so a task's ``k̂``
    is the one it gets alone, in any batch, and two datasets' checks share their error
    only by chance; ``log q`` from ``ε_s`` by :func:`gaussian_log_density`),
    evaluated in groups of draws so that a group touches at most ``max_elements`` data
    points. ``log_p_dtype`` (with ``full`` in that dtype) evaluates ``f_D`` at the draws in
    another dtype than ``loc``'s: float32 halves the cost of the thousand full-data
    evaluations, while the draws and ``log q`` keep the phase's float64 (an
    ill-conditioned precision needs it)."""
    # each task's draws from its own data: its k̂ does not depend on its batch
    noise = _task_noise(task_seeds(full, seed), num_draws, loc)
    tril = covariance_tril(precision)
    draws = loc + torch.einsum("tij,stj->sti", tril, noise)
    log_q = gaussian_log_density(noise, tril)
    per_group = max(1, max_elements // max(1, full.num_points * draws.shape[1]))
    evaluated = draws if log_p_dtype is None else draws.to(log_p_dtype)
    log_p = torch.cat([full.per_particle(group) for group in evaluated.split(per_group)])
    log_weights = (log_p.to(log_q.dtype) - log_q).double().cpu().numpy()
    smoothed, khat = smooth_finite_columns(log_weights)
    return ImportanceCheck(khat, draws, smoothed)
