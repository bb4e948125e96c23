"""A damped-Newton Laplace point: the mode of the full-data log joint and its curvature.

The convergence phase (:mod:`.convergence`) starts from the better (by the full-data
ELBO) of the learned refinement's state and this point, so an encoder that is far off
(wide priors, raw units) costs a few Newton steps instead of accuracy:

    z ← z + t d,   d = Λ̂(z)⁻¹ ∇f_D(z),   Λ̂(z) = Π(−∇²f_D(z))   (|eigenvalues| ≥ λ_min)

(the Hessian by central differences of the gradient along the last Hessian's axes, so
that one compiled kernel gives it, see :func:`_curvature`)

with ``t`` chosen per task by a line search on ``f_D`` that first tries ``t = 1``, then
doubles ``t`` while ``f_D`` keeps increasing (a log-scale coordinate far from its
optimum, e.g. ``log σ²`` under raw-unit residuals, makes Newton's own step one unit
long however far the optimum is), or else quarters it until ``f_D`` increases. A task
stops when its Newton decrement ``½ ∇fᵀ d`` falls below ``tolerance`` nats or no step
improves ``f_D``. The result is the Laplace approximation ``N(ẑ, Λ̂(ẑ)⁻¹)`` (Tierney &
Kadane 1986; the compiled damped Newton that DESIGN.md names as the speed to beat).
"""

from __future__ import annotations

import torch

from iai_prob.inference.posteriors import GaussianFamily
from iai_prob.inference.refinement import RefinementState
from iai_prob.inference.signals import difference_spread

__all__ = ["laplace_point"]


def _log_joint(full, loc: torch.Tensor) -> torch.Tensor:
    """``f_D`` at one point per task ``(T,)``; ``-inf`` where it is not finite."""
    try:
        value = full.per_particle(loc.unsqueeze(0))[0]
    except ValueError:  # a distribution refused the parameters: outside its support
        return torch.full_like(loc[:, 0], -torch.inf)
    # +inf is no better than NaN: a density that overflows (log p of an inverse gamma at
    # a variance of e^-600) must not win the line search
    return torch.where(torch.isfinite(value), value, -torch.inf)


def _curvature(full, loc, metric, family, min_precision):
    """``(∇f_D, Λ̂)`` at ``loc``, chunk by chunk: gradients at ``loc ± s Σ^{½} e_i`` for a
    tiny ``s`` in the units of ``metric`` ``= Σ⁻¹`` (central differences of the gradient,
    :func:`~iai_prob.inference.signals.difference_spread`)."""
    target = full.target(loc, metric, family, min_precision, difference_spread(loc.dtype))
    return target.signal.grad, target.precision


@torch.no_grad()
def laplace_point(
    full,
    loc: torch.Tensor,
    family: GaussianFamily,
    metric: torch.Tensor | None = None,
    *,
    min_precision: float = 1e-3,
    max_steps: int = 50,
    tolerance: float = 1e-6,
    max_doublings: int = 20,
    max_backtracks: int = 12,
) -> RefinementState:
    """The Laplace state ``(ẑ, Λ̂(ẑ))`` per task from ``loc`` ``(T, D)`` (see module).

    ``metric`` ``(T, D, D)`` (a precision; the identity if not given) sets the scale of
    the first Hessian's central differences; later ones use the last Hessian.
    """
    value = _log_joint(full, loc)
    done = torch.zeros_like(value, dtype=torch.bool)
    precision = None
    if metric is None:
        metric = torch.eye(loc.shape[-1], dtype=loc.dtype, device=loc.device).expand(*loc.shape, -1)
    for _ in range(max_steps):
        grad, precision = _curvature(full, loc, metric, family, min_precision)
        metric = precision
        direction = torch.linalg.solve(precision, grad.unsqueeze(-1)).squeeze(-1)
        decrement = 0.5 * (grad * direction).sum(-1)
        finite = torch.isfinite(direction).all(-1)
        done = done | ~finite | (decrement < tolerance)
        if bool(done.all()):
            break
        direction = torch.where(finite[:, None], direction, torch.zeros_like(direction))
        step = torch.ones_like(value)
        best_value = value
        best_loc = loc
        trial_value = _log_joint(full, loc + direction)
        improved = ~done & (trial_value > value)
        best_value = torch.where(improved, trial_value, best_value)
        best_loc = torch.where(improved[:, None], loc + direction, best_loc)
        growing = improved.clone()
        for _ in range(max_doublings):  # longer steps while f_D keeps increasing
            if not bool(growing.any()):
                break
            step = torch.where(growing, 2 * step, step)
            candidate = loc + step[:, None] * direction
            trial_value = _log_joint(full, candidate)
            better = growing & (trial_value > best_value)
            best_value = torch.where(better, trial_value, best_value)
            best_loc = torch.where(better[:, None], candidate, best_loc)
            growing = better
        shrinking = ~done & ~improved
        step = torch.where(shrinking, torch.full_like(step, 0.25), step)
        for _ in range(max_backtracks):  # shorter steps where t = 1 did not increase f_D
            if not bool(shrinking.any()):
                break
            candidate = loc + step[:, None] * direction
            trial_value = _log_joint(full, candidate)
            better = shrinking & (trial_value > value)
            best_value = torch.where(better, trial_value, best_value)
            best_loc = torch.where(better[:, None], candidate, best_loc)
            shrinking = shrinking & ~better
            step = torch.where(shrinking, step / 4, step)
        done = done | shrinking  # no step improved f_D: as far as Newton goes
        loc, value = best_loc, best_value
    if precision is None or not bool(done.all()):
        precision = _curvature(full, loc, metric, family, min_precision)[1]
    return RefinementState(loc, precision)
