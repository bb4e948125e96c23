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

Each step is safeguarded by :func:`~iai_prob.inference.damping.damped_combine`: the
full-data ELBO (sigma-point quadrature) may not decrease; a rejected step backtracks
``ρ ← ρ/4`` and then falls back to the target linearized at the mean alone (a damped
Newton step on ``f_D``), so every accepted step is an ascent and the phase cannot
diverge. A task whose residual did not halve in a step halves its ``ρ`` (an oscillating
non-conjugate target settles). A task is **converged** when ``r(λ) < tolerance``; the
phase stops when every task is, or after ``max_steps`` steps (the user's cap). For a
conjugate model the first target is the exact posterior, so it converges in one step
and one check, whatever the encoder said.

The full data is read in chunks of ``chunk_size`` points with weights ``|B_b|/N``:
``Σ_b (|B_b|/N) f_{B_b} = f_D`` exactly (each chunk's likelihood is scaled by ``N/|B_b|``
and the prior counted once overall), so memory stays bounded for large ``N``.

Every answer carries a :class:`~iai_prob.posterior_status.PosteriorStatus`:
converged or not, the passes used, the last residual and the PSIS ``k̂`` of the final
``q`` against the full-data log joint (:func:`khat_of`).
"""

from __future__ import annotations

import numpy as np
import torch

from iai_prob.convergence_settings import Convergence
from iai_prob.inference.damping import damped_combine, unscented_batch_elbo
from iai_prob.inference.laplace import laplace_point
from iai_prob.inference.posteriors import GaussianFamily, covariance_tril, gaussian_kl
from iai_prob.inference.refinement import RefinementState, check_state
from iai_prob.inference.signals import (
    CurvatureSignal,
    curvature_signal,
    difference_spread,
    natural_gradient_target,
    sigma_point_target,
)
from iai_prob.inference.task_data import TaskData
from iai_prob.inference.updates import combine_natural
from iai_prob.pareto_smoothing import pareto_smooth

__all__ = ["FullData", "converge", "khat_of"]


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

    def signal(self, loc, precision, scheme: str, spread: float | None = None) -> CurvatureSignal:
        """``(E_q ∇f_D, E_q ∇²f_D, E_q f_D)``, chunk by chunk (each chunk's graph is freed
        before the next); see :func:`~iai_prob.inference.signals.curvature_signal`."""
        parts = [
            (weight, curvature_signal(self.log_joint, loc, precision, chunk, scheme, spread=spread))
            for weight, chunk in self.weighted()
        ]
        return CurvatureSignal(
            *(
                sum(weight * getattr(part, field) for weight, part in parts)
                for field in CurvatureSignal._fields
            )
        )


def _target(full: FullData, state, family, min_precision, scheme):
    """The CVI target ``(η̂, Λ̂)`` of the full data at ``state``; ``scheme="mean"``
    linearizes at the mean, with the Hessian by central differences of gradients."""
    spread = None
    if scheme == "mean":
        scheme, spread = "sigma_points", difference_spread(state.loc.dtype)
    if scheme != "sigma_points":
        signal = full.signal(state.loc, state.precision, scheme)
        return natural_gradient_target(signal, state.loc, family, min_precision)
    target = full.solve(
        sigma_point_target, (state.loc, state.precision), (family, min_precision, spread)
    )
    return target.linear, target.precision


def _residual(state, target) -> torch.Tensor:
    """``KL(q_target ‖ q_state)`` per task; ``inf`` where the target is not a valid state."""
    ones = torch.ones_like(state.loc[:, 0])
    target_loc, target_precision = combine_natural(state.loc, state.precision, *target, ones)
    valid = torch.isfinite(target_loc).all(-1) & (
        torch.linalg.cholesky_ex(target_precision)[1] == 0
    )
    eye = torch.eye(state.loc.shape[-1], dtype=state.loc.dtype, device=state.loc.device)
    safe_loc = torch.where(valid[:, None], target_loc, state.loc)
    safe_precision = torch.where(valid[:, None, None], target_precision, eye)
    kl = gaussian_kl(safe_loc, safe_precision, state.loc, state.precision)
    return torch.where(valid, torch.nan_to_num(kl, nan=torch.inf), torch.inf)


def _best_start(state, full: FullData, family, min_precision):
    """Per task, the better by the full-data ELBO of ``state`` and the Laplace point
    reached by damped Newton from its mean (:mod:`.laplace`), and that ELBO."""
    laplace = laplace_point(full, state.loc, family, state.precision, min_precision=min_precision)
    laplace = laplace._replace(precision=family.project(laplace.precision))
    own = unscented_batch_elbo(full, state.loc, state.precision, None)
    other = unscented_batch_elbo(full, laplace.loc, laplace.precision, None)
    take = other > own
    start = state._replace(
        loc=torch.where(take[:, None], laplace.loc, state.loc),
        precision=torch.where(take[:, None, None], laplace.precision, state.precision),
    )
    return start, torch.where(take, other, own)


@torch.no_grad()
def converge(
    state: RefinementState,
    full: FullData,
    family: GaussianFamily,
    convergence: Convergence,
    *,
    min_precision: float = 1e-3,
    linearization: str = "sigma_points",
):
    """Run the convergence phase from ``state`` (see module docstring).

    :returns: ``(state, converged (T,), steps (T,), residual (T,))``.
    """
    state, base = _best_start(state, full, family, min_precision)
    num_tasks = state.loc.shape[0]
    converged = torch.zeros(num_tasks, dtype=torch.bool, device=state.loc.device)
    steps = torch.zeros(num_tasks, dtype=torch.long, device=state.loc.device)
    rho = torch.ones(num_tasks, dtype=state.loc.dtype, device=state.loc.device)
    previous = torch.full_like(rho, torch.inf)
    for step in range(convergence.max_steps + 1):
        target = _target(full, state, family, min_precision, linearization)
        residual = _residual(state, target)
        converged = converged | (residual < convergence.tolerance)
        if bool(converged.all()) or step == convergence.max_steps:
            break
        rho = torch.where(residual > 0.5 * previous, (rho / 2).clamp_min(0.05), rho)
        previous = residual
        if base is None:  # the ELBO of a state just stepped to, needed only to step again
            base = unscented_batch_elbo(full, state.loc, state.precision, None)

        def newton(state=state):
            return _target(full, state, family, min_precision, "mean")

        loc, precision, _ = damped_combine(
            state.loc,
            state.precision,
            rho,
            [lambda target=target: target, newton],
            None,
            full,
            base=base,
            tolerance=1e-6,
        )
        moved = ~converged
        new = RefinementState(
            torch.where(moved[:, None], loc, state.loc),
            torch.where(moved[:, None, None], family.project(precision), state.precision),
            state.step + 1,
            state.points_seen + full.num_points,
        )
        state = check_state(new)
        steps = steps + moved.long()
        base = None
    return state, converged, steps, residual


@torch.no_grad()
def khat_of(
    family: GaussianFamily,
    loc: torch.Tensor,
    precision: torch.Tensor,
    full: FullData,
    num_draws: int,
    seed: int,
    max_elements: int = 1 << 22,
    log_p_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """PSIS ``k̂`` ``(T,)`` of ``q = N(loc, precision⁻¹)`` (``(T, D)``, ``(T, D, D)``) against
    the full data: ``log w_s = f_D(z_s) − log q(z_s)`` for ``num_draws`` draws
    ``z_s = μ + L ε_s`` (``L Lᵀ = Λ⁻¹``, ``ε_s`` from a generator seeded with ``seed``),
    evaluated in groups of draws so that a group touches at most ``max_elements`` data
    points. ``log_p_dtype`` (with ``full`` in that dtype) evaluates ``f_D`` at the draws in
    another dtype than ``loc``'s: float32 halves the cost of the thousand full-data
    evaluations, while the draws and ``log q`` keep the phase's float64 (an
    ill-conditioned precision needs it)."""
    generator = torch.Generator(device=loc.device).manual_seed(seed)
    noise = torch.randn(
        num_draws, *loc.shape, dtype=loc.dtype, device=loc.device, generator=generator
    )
    draws = loc + (covariance_tril(precision) @ noise.unsqueeze(-1)).squeeze(-1)
    log_q = family.distribution(loc, precision).log_prob(draws)
    per_group = max(1, max_elements // max(1, full.num_points * draws.shape[1]))
    evaluated = draws if log_p_dtype is None else draws.to(log_p_dtype)
    log_p = torch.cat([full.per_particle(group) for group in evaluated.split(per_group)])
    log_weights = (log_p.to(log_q.dtype) - log_q).double().cpu().numpy()
    finite = np.isfinite(log_weights).all(0)
    khat = np.full(log_weights.shape[1], np.inf)
    if finite.any():
        khat[finite] = pareto_smooth(log_weights[:, finite])[1]
    return khat
