"""What a refinement step sees of a mini-batch besides the state, in JAX.

The twin of :mod:`iai_prob.inference.signals`. The curvature signal (``"grad"``) is
``(ḡ, H̄) = (E_q ∇f_B, E_q ∇²f_B)`` under ``q = N(μ, Λ⁻¹)`` (Bonnet's and Price's
theorems), taken at sigma points ``μ ± √D Σ^{½} e_i`` with Stein's lemma
``E_q ∇²f = Λ E_q[(z − μ) ∇f(z)ᵀ]`` (one gradient per point, exact for quadratic ``f``),
at the mean alone (a Laplace-style linearization, exact Hessian) or at ``S`` Monte Carlo
draws. :func:`natural_gradient_target` turns it into the conjugate-computation VI target
(Khan & Lin 2017) ``Λ̂ = Π(|−H̄|)``, ``η̂ = ḡ + Λ̂ μ``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from iai_prob.guide_options import LINEARIZATIONS
from iai_prob.numpyro.posteriors import (
    GaussianFamily,
    absolute_eigenvalues,
    covariance_tril,
    symmetrize,
)

__all__ = [
    "CurvatureSignal",
    "curvature_signal",
    "linearization_points",
    "natural_gradient_target",
]


class CurvatureSignal(NamedTuple):
    """``E_q ∇f_B`` ``(T, D)``, ``E_q ∇²f_B`` ``(T, D, D)`` and ``E_q f_B`` ``(T,)``."""

    grad: jax.Array
    hessian: jax.Array
    log_joint: jax.Array


def linearization_points(loc, precision, scheme: str, num_particles: int = 8, key=None):
    """Points ``(S, T, D)`` at which to average gradients and Hessians under ``q``."""
    if scheme == "mean":
        return loc[None]
    scale_tril = covariance_tril(precision)
    if scheme == "sigma_points":
        dim = loc.shape[-1]
        offsets = math.sqrt(dim) * jnp.swapaxes(scale_tril, -1, -2)  # rows √D Σ^{½} e_i
        offsets = jnp.moveaxis(offsets, -2, 0)  # (D, T, D)
        return jnp.concatenate([loc + offsets, loc - offsets], axis=0)
    if scheme == "samples":
        if key is None:
            raise ValueError("linearization='samples' needs a PRNG key")
        noise = jax.random.normal(key, (num_particles, *loc.shape), loc.dtype)
        return loc + (scale_tril @ noise[..., None])[..., 0]
    raise ValueError(f"unknown linearization {scheme!r}; choose from {LINEARIZATIONS}")


def curvature_signal(
    log_joint, loc, precision, batch, scheme: str, num_particles: int = 8, key=None
) -> CurvatureSignal:
    """Average gradient and Hessian of ``f_B`` under ``q = N(loc, precision⁻¹)``.

    The signal is an input to the update, not a path for meta-gradients: the state is
    taken without gradient.
    """
    loc, precision = jax.lax.stop_gradient(loc), jax.lax.stop_gradient(precision)
    points = linearization_points(loc, precision, scheme, num_particles, key)
    values, grads = log_joint.value_and_grad(points, batch)
    if scheme == "sigma_points":
        offsets = (precision[None] @ (points - loc)[..., None])[..., 0]
        hessian = (offsets[..., :, None] * grads[..., None, :]).mean(0)
    else:
        hessian = log_joint.hessian(points, batch).mean(0)
    return CurvatureSignal(
        grad=grads.mean(0), hessian=symmetrize(hessian), log_joint=values.mean(0)
    )


def natural_gradient_target(
    signal: CurvatureSignal, loc, family: GaussianFamily, min_precision: float = 1e-3
):
    """The CVI target ``(η̂, Λ̂)``: ``Λ̂ = Π(|−H̄|)``, ``η̂ = ḡ + Λ̂ μ``."""
    precision = family.project(absolute_eigenvalues(-signal.hessian, min_precision))
    linear = signal.grad + (precision @ loc[..., None])[..., 0]
    return linear, precision
