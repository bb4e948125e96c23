"""Safeguarded steps in JAX: backtracking on the mini-batch ELBO, with a Newton fallback.

The twin of :mod:`iai_prob.inference.damping`, with the same decisions in the same
order. A step ``λ' = (1 − ρ)λ + ρλ̂`` is accepted per task when the sigma-point
mini-batch ELBO ``L_B = E_q f_B + H(q)`` does not drop by more than a relative
``tolerance``; otherwise ``ρ ← ρ/4`` up to ``max_backtracks`` times, then the target
linearized at the mean alone is tried the same way, and a task with no accepted step
keeps its state (``ρ_used = 0``). The loops are ``lax.while_loop`` / ``lax.cond``, so
later proposals and the fallback are only computed while some task is still pending,
as in PyTorch. Only ``ρ`` of the accepted step carries a gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from iai_prob.numpyro.posteriors import gaussian_entropy, reversed_precision
from iai_prob.numpyro.signals import linearization_points
from iai_prob.numpyro.updates import combine_natural

__all__ = ["damped_combine", "unscented_batch_elbo"]


def unscented_batch_elbo(log_joint, loc, precision, batch):
    """``E_q f_B + H(q)`` per task ``(T,)`` with sigma points (``−inf`` if invalid)."""
    loc, precision = jax.lax.stop_gradient(loc), jax.lax.stop_gradient(precision)
    chol = jnp.linalg.cholesky(reversed_precision(precision))  # as covariance_tril factors
    valid = jnp.isfinite(loc).all(-1) & jnp.isfinite(chol).all((-1, -2))
    safe_loc = jnp.where(valid[:, None], loc, 0.0)
    eye = jnp.eye(loc.shape[-1], dtype=loc.dtype)
    safe_precision = jnp.where(valid[:, None, None], precision, eye)
    points = linearization_points(safe_loc, safe_precision, "sigma_points")
    value = log_joint.per_task_mean(points, batch) + gaussian_entropy(safe_precision)
    value = jnp.where(valid, value, -jnp.inf)
    return jnp.where(jnp.isfinite(value), value, -jnp.inf)  # +inf is an overflow


def damped_combine(
    loc,
    precision,
    step_size,
    targets: list[Callable],
    batch,
    log_joint,
    *,
    base=None,
    max_backtracks: int = 6,
    shrink: float = 0.25,
    tolerance: float = 1e-4,
):
    """Combine the state with the first acceptable target (see module docstring).

    ``targets`` are callables returning ``(η̂, Λ̂)``, tried in order; a later one is only
    evaluated while some task is pending. Returns ``(μ', Λ', ρ_used)``.
    """
    num_tasks, dim = loc.shape
    fixed_loc, fixed_precision = jax.lax.stop_gradient(loc), jax.lax.stop_gradient(precision)
    fixed_step = jax.lax.stop_gradient(step_size)
    if base is None:
        base = unscented_batch_elbo(log_joint, fixed_loc, fixed_precision, batch)
    base = jax.lax.stop_gradient(base)
    slack = tolerance * jnp.maximum(jnp.abs(base), 1.0)
    factor = jnp.zeros(num_tasks, loc.dtype)
    choice = jnp.full(num_tasks, -1, jnp.int32)
    computed = []
    placeholder = (
        jnp.zeros((num_tasks, dim), loc.dtype),
        jnp.zeros((num_tasks, dim, dim), loc.dtype),
    )

    for index, make_target in enumerate(targets):
        if index == 0:
            target = make_target()
        else:
            target = jax.lax.cond(
                (choice < 0).any(), lambda make=make_target: make(), lambda: placeholder
            )
        target = jax.lax.stop_gradient(tuple(target))
        computed.append(target)

        def attempt(carry, target=target, index=index):
            attempt_index, scale, factor, choice = carry
            pending = choice < 0
            rho = jnp.minimum(fixed_step * scale, 1.0)
            new_loc, new_precision = combine_natural(fixed_loc, fixed_precision, *target, rho)
            value = unscented_batch_elbo(log_joint, new_loc, new_precision, batch)
            # a finite ELBO only: from a state whose own ELBO is −inf, an invalid
            # candidate (−inf too) is not "no worse" (as the PyTorch twin)
            accept = pending & jnp.isfinite(value) & (value >= base - slack)
            factor = jnp.where(accept, scale, factor)
            choice = jnp.where(accept, index, choice)
            return attempt_index + 1, scale * shrink, factor, choice

        def keep_going(carry):
            attempt_index, _, _, choice = carry
            return (attempt_index <= max_backtracks) & (choice < 0).any()

        start = (jnp.asarray(0), jnp.asarray(1.0, loc.dtype), factor, choice)
        _, _, factor, choice = jax.lax.while_loop(keep_going, attempt, start)

    chosen = jnp.maximum(choice, 0)
    tasks = jnp.arange(num_tasks)
    linear = jnp.stack([t[0] for t in computed])[chosen, tasks]
    target_precision = jnp.stack([t[1] for t in computed])[chosen, tasks]
    # a task with no accepted step combines with its own state at ρ = 0, so a non-finite
    # target or step size it was offered (and rejected) cannot reach its new state
    rejected = choice < 0
    own_linear = (fixed_precision @ fixed_loc[..., None])[..., 0]
    linear = jnp.where(rejected[:, None], own_linear, linear)
    target_precision = jnp.where(rejected[:, None, None], fixed_precision, target_precision)
    used = jnp.where(rejected, 0.0, step_size * jax.lax.stop_gradient(factor))
    new_loc, new_precision = combine_natural(loc, precision, linear, target_precision, used)
    return new_loc, new_precision, used
