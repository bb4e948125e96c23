"""A damped-Newton Laplace point: the mode of the full-data log joint and its curvature.

The convergence phase (:mod:`.convergence`) starts from the better (by the full-data
ELBO) of the learned refinement's state and this point, so an encoder that is far off
(wide priors, raw units) costs a few Newton steps instead of accuracy:

    z ← z + t d,   d = Λ̂(z)⁻¹ ∇f_D(z),   Λ̂(z) = Π(−∇²f_D(z))   (|eigenvalues| ≥ λ_min)

(the Hessian by central differences of the gradient along the last Hessian's axes, so
that gradients alone give it)

with ``t`` chosen per task by a line search on ``f_D`` that first tries ``t = 1``, then
doubles ``t`` while ``f_D`` keeps increasing (a log-scale coordinate far from its
optimum, e.g. ``log σ²`` under raw-unit residuals, makes Newton's own step one unit
long however far the optimum is), or else quarters it until ``f_D`` increases. A task
stops when its Newton decrement ``½ ∇fᵀ d`` falls below ``tolerance`` nats or no step
improves ``f_D``. An iteration is one solver step (:func:`newton_step`): the curvature,
the direction and ``f_D`` at every step length the search could try, evaluated at once,
so that a compiled model runs one kernel per iteration instead of one per trial (on a
small dataset, the dispatch of each evaluation costs more than its arithmetic).

The result is the Laplace approximation ``N(ẑ, Λ̂(ẑ)⁻¹)`` (Tierney & Kadane 1986; the
compiled damped Newton that DESIGN.md names as the speed to beat).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from iai_prob.inference.posteriors import GaussianFamily
from iai_prob.inference.signals import difference_spread, sigma_point_target
from iai_prob.refinement_state import RefinementState

__all__ = ["NewtonStep", "laplace_point", "newton_step", "step_lengths"]


class NewtonStep(NamedTuple):
    """One damped-Newton iteration per task, from ``z`` with ``f_D(z)`` known."""

    loc: torch.Tensor  # (T, D): z + t d, or z where no step was taken
    value: torch.Tensor  # (T,): f_D there
    precision: torch.Tensor  # (T, D, D): Λ̂(z), at the iteration's start
    stop: torch.Tensor  # (T,): converged (decrement < tolerance), no finite step, or stuck
    direction: torch.Tensor  # (T, D): the Newton direction d
    longer: torch.Tensor  # (T,): f_D still increased at the ladder's longest length
    shorter: torch.Tensor  # (T,): no length of the ladder increased f_D


def _finite_or_minus_inf(value: torch.Tensor) -> torch.Tensor:
    # +inf is no better than NaN: a density that overflows (log p of an inverse gamma at
    # a variance of e^-600) must not win a line search
    return torch.where(torch.isfinite(value), value, -torch.inf)


def _log_joint(full, loc: torch.Tensor) -> torch.Tensor:
    """``f_D`` at points ``loc`` ``(K, T, D)``: ``(K, T)``, ``-inf`` where not finite or
    where a distribution refuses the parameters (outside its support); one point at a
    time where one of them is refused."""
    try:
        return _finite_or_minus_inf(full.per_particle(loc))
    except ValueError:
        if loc.shape[0] == 1:
            return torch.full_like(loc[..., 0], -torch.inf)
        return torch.cat([_log_joint(full, point) for point in loc.split(1)])


def step_lengths(max_doublings: int, max_backtracks: int, dtype, device) -> torch.Tensor:
    """The line search's ladder: ``1, 2, 4, …, 2^max_doublings`` then
    ``4^-1, …, 4^-max_backtracks``."""
    up = 2.0 ** torch.arange(max_doublings + 1, dtype=dtype, device=device)
    down = 0.25 ** torch.arange(1, max_backtracks + 1, dtype=dtype, device=device)
    return torch.cat([up, down])


def newton_step(
    log_joint,
    loc: torch.Tensor,
    metric: torch.Tensor,
    value: torch.Tensor,
    family: GaussianFamily,
    min_precision: float,
    tolerance: float,
    max_doublings: int,
    max_backtracks: int,
    *,
    traceable: bool = False,
) -> NewtonStep:
    """One iteration of the module's damped Newton from ``loc`` ``(T, D)`` (``f_D(loc) =
    value``), a solver step (:meth:`~iai_prob.inference.log_joint.LogJoint.solve`) free
    of Python branches: ``Λ̂`` by central differences along ``metric``'s axes, the
    direction ``d``, and ``f_D`` at every step length of :func:`step_lengths` at once.
    The step taken is the one the sequential search would take: the longest doubling
    before ``f_D`` stops increasing when ``t = 1`` improves on ``f_D(z)``, else the first
    quartering that does."""
    spread = difference_spread(loc.dtype)
    target = sigma_point_target(
        log_joint, loc, metric, family, min_precision, spread, traceable=traceable
    )
    grad, precision = target.signal.grad, target.precision
    direction = torch.linalg.solve(precision, grad.unsqueeze(-1)).squeeze(-1)
    decrement = 0.5 * (grad * direction).sum(-1)
    finite = torch.isfinite(direction).all(-1)
    direction = torch.where(finite[:, None], direction, torch.zeros_like(direction))
    lengths = step_lengths(max_doublings, max_backtracks, loc.dtype, loc.device)
    candidates = loc + lengths[:, None, None] * direction  # (K, T, D)
    values = _finite_or_minus_inf(log_joint.per_particle(candidates))
    up, down = values.split([max_doublings + 1, max_backtracks])
    improved = up[0] > value
    rising = torch.cat([improved[None], up[1:] > up[:-1]]).long().cumprod(0)
    longest = (rising.sum(0) - 1).clamp_min(0)  # the last doubling that still increased f_D
    accepted = down > value
    first = accepted.long().argmax(0)  # the first quartering that increased f_D
    index = torch.where(improved, longest, max_doublings + 1 + first)
    searching = finite & (decrement >= tolerance)
    moved = (improved | accepted.any(0)) & searching
    chosen = candidates.gather(0, index[None, :, None].expand(1, *loc.shape))[0]
    return NewtonStep(
        loc=torch.where(moved[:, None], chosen, loc),
        value=torch.where(moved, values.gather(0, index[None])[0], value),
        precision=precision,
        stop=~moved,
        direction=direction,
        longer=searching & improved & (longest == max_doublings),
        shorter=searching & ~moved,
    )


def _searched_further(full, loc, value, step, ladder, max_doublings, max_backtracks):
    """The sequential search past a short ladder's ends, for the tasks it left open:
    doublings while ``f_D`` keeps increasing (``step.longer``), quarterings until it
    increases (``step.shorter``), up to the search's limits; one evaluation each."""
    best_loc, best_value, stop = step.loc, step.value, step.stop
    growing, shrinking = step.longer, step.shorter
    length = 2.0 ** ladder[0]
    for _ in range(ladder[0], max_doublings):
        if not bool(growing.any()):
            break
        length *= 2
        candidate = loc + length * step.direction
        trial = _log_joint(full, candidate.unsqueeze(0))[0]
        growing = growing & (trial > best_value)
        best_value = torch.where(growing, trial, best_value)
        best_loc = torch.where(growing[:, None], candidate, best_loc)
    length = 0.25 ** ladder[1]
    for _ in range(ladder[1], max_backtracks):
        if not bool(shrinking.any()):
            break
        length /= 4
        candidate = loc + length * step.direction
        trial = _log_joint(full, candidate.unsqueeze(0))[0]
        better = shrinking & (trial > value)
        best_value = torch.where(better, trial, best_value)
        best_loc = torch.where(better[:, None], candidate, best_loc)
        stop, shrinking = stop & ~better, shrinking & ~better
    return step._replace(loc=best_loc, value=best_value, stop=stop)


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
    at_once: bool = True,
) -> RefinementState:
    """The Laplace state ``(ẑ, Λ̂(ẑ))`` per task from ``loc`` ``(T, D)`` (see module):
    one :func:`newton_step` (one compiled kernel once compiled) per iteration.

    ``metric`` ``(T, D, D)`` (a precision; the identity if not given) sets the scale of
    the first Hessian's central differences; later ones use the last Hessian.
    ``at_once=False`` (data whose evaluation costs more than its dispatch) gives each
    iteration the ladder ``t ∈ {1, 2, ¼}`` and continues the search one length at a
    time past its ends where it must: the same steps, fewer evaluations.
    """
    value = _log_joint(full, loc.unsqueeze(0))[0]
    done = torch.zeros_like(value, dtype=torch.bool)
    if metric is None:
        metric = torch.eye(loc.shape[-1], dtype=loc.dtype, device=loc.device).expand(*loc.shape, -1)
    ladder = (max_doublings, max_backtracks) if at_once else (1, 1)
    options = (family, min_precision, tolerance, *ladder)
    for _ in range(max_steps):
        step = full.solve(newton_step, (loc, metric, value), options)
        if not at_once and bool((step.longer | step.shorter).any()):
            step = _searched_further(full, loc, value, step, ladder, max_doublings, max_backtracks)
        metric = step.precision
        loc = torch.where(done[:, None], loc, step.loc)
        value = torch.where(done, value, step.value)
        done = done | step.stop
        if bool(done.all()):
            return RefinementState(loc, metric)
    spread = difference_spread(loc.dtype)
    target = full.solve(sigma_point_target, (loc, metric), (family, min_precision, spread))
    return RefinementState(loc, target.precision)
