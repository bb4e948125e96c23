"""Update rules in JAX: how a refinement step moves the Gaussian state toward its target.

The twin of :mod:`iai_prob.inference.updates`. :class:`NaturalGradientUpdate` is the
damped stochastic natural-gradient step of conjugate-computation VI (Khan & Lin 2017),

    Λ_{k+1} = (1 − ρ_k) Λ_k + ρ_k Λ̂_k,      η_{k+1} = (1 − ρ_k) η_k + ρ_k η̂_k,

with the learned step size around the Robbins–Monro schedule

    ρ_k = σ( log|B_k| − log(n_k + w |B_k|) + δ_φ(u_k) ),

``n_k`` the points consumed before step ``k``, ``w`` learned (initially 0.01) and
``δ_φ`` an MLP of the step context ``u_k`` (:func:`step_context`), zero at initialization.
:class:`LearnedSiteTarget` is the gradient-free target of the ``signals=("data",)``
regime: ``Λ̂ = Λ_φ + (N/|B|) Λ_φ(B)``, ``η̂ = η_φ + (N/|B|) η_φ(B)``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from iai_prob.numpyro.encoders import MLP, Linear
from iai_prob.numpyro.posteriors import GaussianFamily, symmetrize

__all__ = ["LearnedSiteTarget", "NaturalGradientUpdate", "combine_natural", "step_context"]


def _solve(chol, rhs):
    """``(L Lᵀ)⁻¹ rhs`` for vectors ``rhs`` ``(..., D)``."""
    from jax.scipy.linalg import solve_triangular

    half = solve_triangular(chol, rhs[..., None], lower=True)
    return solve_triangular(jnp.swapaxes(chol, -1, -2), half, lower=False)[..., 0]


def combine_natural(loc, precision, target_linear, target_precision, step_size):
    """``(1 − ρ)(η, Λ) + ρ(η̂, Λ̂)``, returned as ``(μ, Λ)``; ``ρ`` has shape ``(T,)``.

    A combination that is not positive definite gives a NaN mean (as the torch side).
    """
    rho = step_size[:, None]
    linear = (1 - rho) * (precision @ loc[..., None])[..., 0] + rho * target_linear
    new_precision = (1 - rho[..., None]) * precision + rho[..., None] * target_precision
    new_precision = symmetrize(new_precision)
    chol = jnp.linalg.cholesky(new_precision)
    failed = ~jnp.isfinite(chol).all((-1, -2))
    eye = jnp.eye(loc.shape[-1], dtype=loc.dtype)
    chol = jnp.where(failed[:, None, None], eye, chol)
    new_loc = _solve(chol, linear)
    return jnp.where(failed[:, None], jnp.nan, new_loc), new_precision


def step_context(step, total_points, batch_points, loc, precision, target_linear, target_precision):
    """Scale-free features ``u_k`` of one step, ``(T, 5)``.

    ``[log(k+1)/log 1024, log N/log 1024, log|B|/log 1024, log1p(‖Λ̂⁻¹η̂ − μ‖_Λ̂)/5,
    (log det Λ̂ − log det Λ)/D / 5]``.
    """
    num_tasks, dim = loc.shape
    scale = math.log(1024.0)
    counts = jnp.stack(
        [
            jnp.log(jnp.asarray(step, loc.dtype) + 1) / scale,
            jnp.log(jnp.asarray(total_points, loc.dtype)) / scale,
            jnp.log(jnp.asarray(batch_points, loc.dtype)) / scale,
        ]
    )
    counts = jnp.broadcast_to(counts, (num_tasks, 3))
    target_chol = jnp.linalg.cholesky(target_precision)
    target_loc = _solve(target_chol, target_linear)
    delta = target_loc - loc
    distance = ((target_precision @ delta[..., None])[..., 0] * delta).sum(-1)
    distance = jnp.log1p(jnp.sqrt(jnp.maximum(distance, 0))) / 5
    logdet_target = 2 * jnp.log(jnp.diagonal(target_chol, axis1=-2, axis2=-1)).sum(-1)
    logdet_state = jnp.linalg.slogdet(precision)[1]
    contraction = (logdet_target - logdet_state) / (5 * dim)
    extra = jnp.stack([distance, contraction], -1)
    extra = jnp.nan_to_num(extra, nan=0.0, posinf=10.0, neginf=-10.0)
    return jax.lax.stop_gradient(jnp.concatenate([counts, extra], -1))


class NaturalGradientUpdate(eqx.Module):
    """Learned step size ``ρ_k`` (see module docstring)."""

    log_init_weight: jax.Array
    correction: MLP

    def __init__(self, context_dim: int, hidden_dim: int = 32, init_weight: float = 0.01, *, key):
        self.log_init_weight = jnp.asarray(math.log(init_weight), jnp.result_type(float))
        self.correction = MLP([context_dim, hidden_dim, hidden_dim, 1], key=key, zero_last=True)

    def step_size(self, points_seen, batch_points, context):
        """``ρ_k`` for each task, ``(T,)``."""
        weight = jnp.exp(self.log_init_weight)
        batch_points = jnp.asarray(batch_points, context.dtype)
        logit = jnp.log(batch_points) - jnp.log(points_seen + weight * batch_points)
        return jax.nn.sigmoid(logit + self.correction(context)[..., 0])


class LearnedSiteTarget(eqx.Module):
    """Gradient-free target from a mini-batch embedding (see module docstring)."""

    prior_raw: jax.Array
    site_head: Linear

    def __init__(self, embed_dim: int, family: GaussianFamily, *, key):
        self.prior_raw = jnp.zeros((family.num_raw(),))
        self.site_head = Linear(embed_dim, family.num_raw(), key=key, zero=True)

    def __call__(self, family: GaussianFamily, embedding, likelihood_scale):
        prior_loc, prior_precision = family.from_raw(self.prior_raw)
        site_loc, site_precision = family.from_raw(self.site_head(embedding))
        precision = prior_precision + likelihood_scale * site_precision
        linear = (prior_precision @ prior_loc[..., None])[..., 0] + likelihood_scale * (
            site_precision @ site_loc[..., None]
        )[..., 0]
        return linear, precision
