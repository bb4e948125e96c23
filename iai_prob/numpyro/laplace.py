"""A damped-Newton Laplace point in JAX: the mode of the full-data log joint and its curvature.

The twin of :mod:`iai_prob.inference.laplace` (the math, the line search that doubles or
quarters the Newton step, and the stopping rule are written there), with the same
decisions in the same order. The loops are ``lax.while_loop`` / ``lax.cond``: the line
searches and the Newton steps stop as soon as no task needs them, as in PyTorch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from iai_prob.numpyro.posteriors import GaussianFamily
from iai_prob.numpyro.signals import curvature_signal, natural_gradient_target

__all__ = ["laplace_point"]


def _log_joint(full, loc):
    """``f_D`` at one point per task ``(T,)``; ``-inf`` where it is not finite: ``+inf``
    is no better than NaN (a density that overflows, e.g. an inverse gamma's at a
    variance of e⁻⁶⁰⁰, must not win the line search)."""
    value = full.per_particle(loc[None])[0]
    return jnp.where(jnp.isfinite(value), value, -jnp.inf)


def _curvature(full, loc, family, min_precision):
    """``(∇f_D, Λ̂)`` at ``loc`` (the "mean" linearization)."""
    eye = jnp.broadcast_to(jnp.eye(loc.shape[-1], dtype=loc.dtype), (*loc.shape, loc.shape[-1]))
    signal = curvature_signal(full, loc, eye, None, "mean")
    _, precision = natural_gradient_target(signal, loc, family, min_precision)
    return signal.grad, precision


def _line_search(full, loc, value, direction, done, max_doublings, max_backtracks):
    """Per task the best of ``loc + t d`` (see module docstring) and whether no step
    improved ``f_D``."""
    trial = _log_joint(full, loc + direction)
    improved = ~done & (trial > value)
    best_value = jnp.where(improved, trial, value)
    best_loc = jnp.where(improved[:, None], loc + direction, loc)

    def grow(carry):  # longer steps while f_D keeps increasing
        count, step, best_value, best_loc, growing = carry
        step = jnp.where(growing, 2 * step, step)
        candidate = loc + step[:, None] * direction
        trial = _log_joint(full, candidate)
        better = growing & (trial > best_value)
        best_value = jnp.where(better, trial, best_value)
        best_loc = jnp.where(better[:, None], candidate, best_loc)
        return count + 1, step, best_value, best_loc, better

    def shrink(carry):  # shorter steps where t = 1 did not increase f_D
        count, step, best_value, best_loc, shrinking = carry
        candidate = loc + step[:, None] * direction
        trial = _log_joint(full, candidate)
        better = shrinking & (trial > value)
        best_value = jnp.where(better, trial, best_value)
        best_loc = jnp.where(better[:, None], candidate, best_loc)
        shrinking = shrinking & ~better
        return count + 1, jnp.where(shrinking, step / 4, step), best_value, best_loc, shrinking

    def pending(limit):
        return lambda carry: (carry[0] < limit) & carry[-1].any()

    ones = jnp.ones_like(value)
    start = (jnp.asarray(0), ones, best_value, best_loc, improved)
    _, _, best_value, best_loc, _ = jax.lax.while_loop(pending(max_doublings), grow, start)
    shrinking = ~done & ~improved
    start = (jnp.asarray(0), 0.25 * ones, best_value, best_loc, shrinking)
    _, _, best_value, best_loc, shrinking = jax.lax.while_loop(
        pending(max_backtracks), shrink, start
    )
    return best_loc, best_value, shrinking


def laplace_point(
    full,
    loc,
    family: GaussianFamily,
    *,
    min_precision: float = 1e-3,
    max_steps: int = 50,
    tolerance: float = 1e-6,
    max_doublings: int = 20,
    max_backtracks: int = 12,
):
    """The Laplace state ``(ẑ, Λ̂(ẑ))`` per task from ``loc`` ``(T, D)`` (see module);
    ``full`` evaluates ``f_D`` (:class:`~iai_prob.numpyro.convergence.FullData`)."""
    loc = jax.lax.stop_gradient(loc)

    def newton(carry):
        # the curvature at the top of every iteration, the last one's at the final point
        # (one traced Hessian in the compiled program)
        count, loc, value, done, _, _ = carry
        grad, precision = _curvature(full, loc, family, min_precision)
        direction = jnp.linalg.solve(precision, grad[..., None])[..., 0]
        decrement = 0.5 * (grad * direction).sum(-1)
        finite = jnp.isfinite(direction).all(-1)
        done = done | ~finite | (decrement < tolerance)
        stop = done.all() | (count >= max_steps)

        def search():
            safe = jnp.where(finite[:, None], direction, 0.0)
            new_loc, new_value, stuck = _line_search(
                full, loc, value, safe, done, max_doublings, max_backtracks
            )
            return new_loc, new_value, done | stuck  # stuck: no step improved f_D

        loc, value, done = jax.lax.cond(stop, lambda: (loc, value, done), search)
        return count + 1, loc, value, done, precision, stop

    value = _log_joint(full, loc)
    eye = jnp.broadcast_to(jnp.eye(loc.shape[-1], dtype=loc.dtype), (*loc.shape, loc.shape[-1]))
    start = (jnp.asarray(0), loc, value, jnp.zeros(value.shape, bool), eye, jnp.asarray(False))
    _, loc, _, _, precision, _ = jax.lax.while_loop(lambda carry: ~carry[-1], newton, start)
    return loc, precision
