"""Safeguarded steps: backtracking on the mini-batch ELBO, with a Newton fallback.

A refinement step proposes ``λ' = (1 − ρ)λ + ρλ̂``. For conjugate-exponential models the
mini-batch ELBO ``L_B(λ) = E_q f_B + H(q)`` increases monotonically along that segment
(``d/dρ KL(q_{λ(ρ)} ‖ q_λ̂) = −(1−ρ)(λ̂−λ)ᵀF(λ̂−λ) ≤ 0``), so a proposal that lowers
``L_B`` signals a bad target: one linearized far in the tails of a wide state, where
``f_B`` is far from quadratic (e.g. ``log σ`` of a scale). Each task then shrinks its
step, ``ρ ← ρ/4``, up to ``max_backtracks`` times; if no shrunken step is accepted, the
target linearized at the mean alone (a damped Newton step) is tried the same way; if
that fails too the task keeps its state for this step. ``L_B`` is evaluated with sigma
points, so the check is deterministic. Accepted steps keep their gradient path through
``ρ`` (the shrink factor is a constant), so meta-training sees the damping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from iai_prob.inference.posteriors import gaussian_entropy, reversed_precision
from iai_prob.inference.signals import linearization_points
from iai_prob.inference.updates import combine_natural

__all__ = ["Backtracked", "backtracked_combine", "damped_combine", "unscented_batch_elbo"]


@torch.no_grad()
def unscented_batch_elbo(log_joint, loc, precision, batch) -> torch.Tensor:
    """``E_q f_B + H(q)`` per task ``(…, T)``, with sigma-point quadrature (``−inf`` if
    invalid); ``loc`` ``(…, T, D)`` may stack candidate states in front, whose sigma points
    are then evaluated together as particles."""
    factored = torch.linalg.cholesky_ex(reversed_precision(precision))[1] == 0
    valid = torch.isfinite(loc).all(-1) & factored  # else rejected, not raised
    safe_loc = torch.where(valid.unsqueeze(-1), loc, torch.zeros_like(loc))
    eye = torch.eye(loc.shape[-1], dtype=loc.dtype, device=loc.device)
    safe_precision = torch.where(valid[..., None, None], precision, eye)
    points = linearization_points(safe_loc, safe_precision, "sigma_points")  # (2D, …, T, D)
    try:
        value = log_joint.per_particle(points.reshape(-1, *loc.shape[-2:]), batch)
    except ValueError:  # a distribution refused the parameters: outside its support
        if loc.dim() > 2 and loc.shape[0] > 1:  # then candidate by candidate
            pairs = zip(loc, precision, strict=True)
            return torch.stack([unscented_batch_elbo(log_joint, *pair, batch) for pair in pairs])
        return torch.full_like(loc[..., 0], -torch.inf)
    value = value.reshape(points.shape[:-1]).mean(0) + gaussian_entropy(safe_precision)
    value = torch.where(valid, value, torch.full_like(value, -torch.inf))
    return torch.where(torch.isfinite(value), value, -torch.inf)  # +inf is an overflow


def _improves(value: torch.Tensor, base: torch.Tensor, slack: torch.Tensor) -> torch.Tensor:
    """Whether a candidate's ELBO ``value`` is acceptable against the state's ``base``: at
    least ``base − slack`` and finite, so that an invalid candidate (``−inf``: not positive
    definite, outside a support) is never taken from a state whose own ELBO is ``−inf``
    (e.g. a sigma point whose rate overflowed)."""
    return torch.isfinite(value) & (value >= base - slack)


class Backtracked(NamedTuple):
    """The result of :func:`backtracked_combine` per task."""

    loc: torch.Tensor  # (T, D): the accepted state, or the state where none was
    precision: torch.Tensor  # (T, D, D)
    value: torch.Tensor  # (T,): its unscented ELBO
    accepted: torch.Tensor  # (T,): whether a step was accepted


def backtracked_combine(
    log_joint,
    loc: torch.Tensor,
    precision: torch.Tensor,
    step_size: torch.Tensor,
    target: tuple[torch.Tensor, torch.Tensor],
    base: torch.Tensor,
    *,
    max_backtracks: int = 6,
    shrink: float = 0.25,
    tolerance: float = 1e-4,
) -> Backtracked:
    """:func:`damped_combine`'s backtracking on one target with every step size
    ``ρ shrink^k`` (``k ≤ max_backtracks``) evaluated at once and no Python branch on
    values (a part of a compiled solver step): the first ``k`` whose ELBO is at least
    ``base`` (less the tolerance) is taken, as the sequential search would."""
    scales = shrink ** torch.arange(max_backtracks + 1, dtype=loc.dtype, device=loc.device)
    rho = (step_size * scales[:, None]).clamp(max=1.0)  # (K, T)
    count = rho.shape[0]
    candidates = combine_natural(
        loc.expand(count, *loc.shape),
        precision.expand(count, *precision.shape),
        target[0].expand(count, *target[0].shape),
        target[1].expand(count, *target[1].shape),
        rho,
    )
    values = unscented_batch_elbo(log_joint, *candidates, None)  # (K, T)
    accept = _improves(values, base, tolerance * base.abs().clamp_min(1.0))
    first = accept.long().argmax(0)  # the first accepted step size
    accepted = accept.any(0)

    def chosen(tensor, own):
        index = first.reshape(1, -1, *(1,) * (tensor.dim() - 2)).expand(1, *tensor.shape[1:])
        picked = tensor.gather(0, index)[0]
        return torch.where(accepted.reshape(-1, *(1,) * (own.dim() - 1)), picked, own)

    return Backtracked(
        chosen(candidates[0], loc), chosen(candidates[1], precision), chosen(values, base), accepted
    )


def damped_combine(
    loc: torch.Tensor,
    precision: torch.Tensor,
    step_size: torch.Tensor,
    targets: list[Callable[[], tuple[torch.Tensor, torch.Tensor]]],
    batch,
    log_joint,
    *,
    base: torch.Tensor | None = None,
    max_backtracks: int = 6,
    shrink: float = 0.25,
    tolerance: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Combine the state with the first acceptable target (see module docstring).

    ``targets`` are callables returning ``(η̂, Λ̂)``, tried in order (later ones lazily).
    ``base`` is the state's ``L_B`` if already known. Returns ``(μ', Λ', ρ_used)``;
    ``ρ_used = 0`` where no step was accepted.
    """
    num_tasks = loc.shape[0]
    if base is None:
        base = unscented_batch_elbo(log_joint, loc.detach(), precision.detach(), batch)
    slack = tolerance * base.abs().clamp_min(1.0)
    factor = torch.zeros(num_tasks, dtype=loc.dtype, device=loc.device)
    choice = torch.full((num_tasks,), -1, dtype=torch.long, device=loc.device)
    computed = []
    for index, make_target in enumerate(targets):
        pending = choice < 0
        if not bool(pending.any()):
            break
        target = tuple(t.detach() for t in make_target())
        computed.append(target)
        scale = 1.0
        for _ in range(max_backtracks + 1):
            rho = (step_size.detach() * scale).clamp(max=1.0)
            with torch.no_grad():
                new_loc, new_precision = combine_natural(
                    loc.detach(), precision.detach(), *target, rho
                )
            value = unscented_batch_elbo(log_joint, new_loc, new_precision, batch)
            accept = pending & _improves(value, base, slack)
            factor = torch.where(accept, torch.full_like(factor, scale), factor)
            choice = torch.where(accept, torch.full_like(choice, index), choice)
            pending = pending & ~accept
            if not bool(pending.any()):
                break
            scale *= shrink
    chosen = choice.clamp_min(0)
    linear = torch.stack([t[0] for t in computed])[chosen, torch.arange(num_tasks)]
    target_precision = torch.stack([t[1] for t in computed])[chosen, torch.arange(num_tasks)]
    # a task with no accepted step combines with its own state at ρ = 0, so a non-finite
    # target or step size it was offered (and rejected) cannot reach its new state
    rejected = choice < 0
    own_precision = precision.detach()
    own_linear = (own_precision @ loc.detach().unsqueeze(-1)).squeeze(-1)
    linear = torch.where(rejected.unsqueeze(-1), own_linear, linear)
    target_precision = torch.where(rejected[:, None, None], own_precision, target_precision)
    used = torch.where(rejected, torch.zeros_like(step_size), step_size * factor)
    new_loc, new_precision = combine_natural(loc, precision, linear, target_precision, used)
    return new_loc, new_precision, used
