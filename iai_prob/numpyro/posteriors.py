"""Gaussian posterior families over the joint unconstrained latent, in JAX.

The JAX twin of :mod:`iai_prob.inference.posteriors` (same names, same math): the
refinement keeps ``N(μ, Λ⁻¹)`` in natural parameters (Khan & Lin 2017) and a family
fixes the structure of ``Λ``:

* ``"diagonal"``: ``Λ = diag(λ)``;
* ``"low_rank"``: ``Λ = diag(λ) + U Uᵀ`` with ``U ∈ ℝ^{D×r}``;
* ``"full_rank"``: any symmetric positive-definite ``Λ = L Lᵀ``.

A family's name, options, configuration and raw length are written once for both
backends (:mod:`iai_prob.posterior_families`); here are its arrays: ``from_raw`` maps
network outputs to ``(μ, Λ)`` exactly as the PyTorch side does (the raw layout is part
of the shared checkpoint format), ``project`` maps a positive-definite target onto the
structure and ``distribution`` returns the NumPyro distribution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist

from iai_prob import posterior_families as structure
from iai_prob.numpyro.xla_guard import serial_eigh

__all__ = [
    "POSTERIOR_FAMILIES",
    "DiagonalGaussian",
    "FullRankGaussian",
    "GaussianFamily",
    "LowRankGaussian",
    "absolute_eigenvalues",
    "covariance_tril",
    "gaussian_entropy",
    "gaussian_kl",
    "get_posterior_family",
    "reversed_precision",
    "symmetrize",
]


def _diag_embed(values):
    return values[..., :, None] * jnp.eye(values.shape[-1], dtype=values.dtype)


def _diagonal(matrix):
    return jnp.diagonal(matrix, axis1=-2, axis2=-1)


def symmetrize(matrix):
    """``(A + Aᵀ)/2``."""
    return 0.5 * (matrix + jnp.swapaxes(matrix, -1, -2))


def reversed_precision(precision):
    """``J Λ J``, the precision with its indices reversed: the matrix
    :func:`covariance_tril` factors, so that its Cholesky factor is finite exactly where
    sigma points can be formed (as :func:`iai_prob.inference.posteriors.reversed_precision`)."""
    return jnp.flip(precision, (-2, -1))


@jax.jit
def covariance_tril(precision):
    """Lower Cholesky factor ``L`` of the covariance, ``L Lᵀ = Λ⁻¹``, from one factor of
    the reversed precision ``J Λ J = R Rᵀ``: ``L = J R⁻ᵀ J`` (the torch side's
    :func:`iai_prob.inference.posteriors.covariance_tril` has the derivation). Compiled,
    as answering a posterior calls it eagerly."""
    from jax.scipy.linalg import solve_triangular

    reversed_factor = jnp.linalg.cholesky(reversed_precision(precision))
    eye = jnp.broadcast_to(jnp.eye(precision.shape[-1], dtype=precision.dtype), precision.shape)
    upper = solve_triangular(jnp.swapaxes(reversed_factor, -1, -2), eye, lower=False)
    return jnp.flip(upper, (-2, -1))


def _cho_solve(chol, rhs):
    """``(L Lᵀ)⁻¹ rhs`` for a batch of lower factors ``L`` and matrices ``rhs``."""
    from jax.scipy.linalg import solve_triangular

    half = solve_triangular(chol, rhs, lower=True)
    return solve_triangular(jnp.swapaxes(chol, -1, -2), half, lower=False)


def absolute_eigenvalues(matrix, floor: float):
    """``V max(|λ|, floor) Vᵀ``: a positive-definite curvature (saddle-free Newton,
    Dauphin et al. 2014).

    A batch element with a non-finite entry gives an all-NaN result for that element
    alone, which the damping rejects (that task keeps its state), as in PyTorch.
    """
    finite = jnp.isfinite(matrix).all((-1, -2))[..., None, None]
    # distinct placeholder eigenvalues keep eigh well conditioned for the masked elements
    placeholder = jnp.diag(jnp.arange(1, matrix.shape[-1] + 1, dtype=matrix.dtype))
    symmetric = jnp.where(finite, symmetrize(matrix), placeholder)
    eigenvalues, eigenvectors = serial_eigh(symmetric)
    scaled = eigenvectors * jnp.maximum(jnp.abs(eigenvalues), floor)[..., None, :]
    return jnp.where(finite, scaled @ jnp.swapaxes(eigenvectors, -1, -2), jnp.nan)


def gaussian_entropy(precision):
    """Entropy of ``N(μ, Λ⁻¹)``: ``D/2 (1 + log 2π) − ½ log det Λ``, shape ``(...,)``."""
    dim = precision.shape[-1]
    chol = jnp.linalg.cholesky(precision)
    half_logdet = jnp.log(_diagonal(chol)).sum(-1)
    return 0.5 * dim * (1.0 + np.log(2 * np.pi)) - half_logdet


def gaussian_kl(loc_p, precision_p, loc_q, precision_q):
    """``KL(N(μ_p, Λ_p⁻¹) ‖ N(μ_q, Λ_q⁻¹))`` per batch entry."""
    dim = loc_p.shape[-1]
    chol_p = jnp.linalg.cholesky(precision_p)
    cov_p = _cho_solve(chol_p, jnp.broadcast_to(jnp.eye(dim, dtype=loc_p.dtype), precision_p.shape))
    trace = (precision_q * cov_p).sum((-1, -2))
    delta = loc_q - loc_p
    mahalanobis = (delta * (precision_q @ delta[..., None])[..., 0]).sum(-1)
    logdet_p = 2 * jnp.log(_diagonal(chol_p)).sum(-1)
    logdet_q = 2 * jnp.log(_diagonal(jnp.linalg.cholesky(precision_q))).sum(-1)
    return 0.5 * (trace + mahalanobis - dim + logdet_p - logdet_q)


class GaussianFamily(structure.FamilyStructure):
    """Structure of the precision matrix of a Gaussian posterior (see module docstring)."""

    def from_raw(self, raw):
        """Map ``(..., num_raw)`` network outputs to ``(μ, Λ)``; zeros give ``N(0, I)``."""
        raise NotImplementedError

    def project(self, precision):
        """Project a symmetric positive-definite ``Λ`` onto the family's structure."""
        return precision

    def distribution(self, loc, precision):
        """The NumPyro distribution ``N(μ, Λ⁻¹)`` with event shape ``(D,)``."""
        return dist.MultivariateNormal(loc, scale_tril=covariance_tril(precision))


class DiagonalGaussian(structure.DiagonalStructure, GaussianFamily):
    """Mean-field Gaussian ``N(μ, diag(λ)⁻¹)``."""

    def from_raw(self, raw):
        loc, log_precision = jnp.split(raw, [self.latent_dim], axis=-1)
        return loc, _diag_embed(jnp.exp(jnp.clip(log_precision, *structure.LOG_PRECISION_RANGE)))

    def project(self, precision):
        return _diag_embed(_diagonal(precision))

    def distribution(self, loc, precision):
        return dist.Normal(loc, 1.0 / jnp.sqrt(_diagonal(precision))).to_event(1)


class LowRankGaussian(structure.LowRankStructure, GaussianFamily):
    """``N(μ, (diag(λ) + U Uᵀ)⁻¹)`` with ``U`` of rank ``rank``."""

    def from_raw(self, raw):
        d = self.latent_dim
        loc, log_precision, factor = jnp.split(raw, [d, 2 * d], axis=-1)
        factor = factor.reshape(*factor.shape[:-1], d, self.rank)
        diagonal = _diag_embed(jnp.exp(jnp.clip(log_precision, *structure.LOG_PRECISION_RANGE)))
        return loc, diagonal + factor @ jnp.swapaxes(factor, -1, -2)

    def project(self, precision):
        """Keep the top ``rank`` eigen-directions exactly and the rest on the diagonal."""
        if self.rank >= self.latent_dim:
            return precision
        eigenvalues, eigenvectors = serial_eigh(precision)
        top_values = eigenvalues[..., -self.rank :]
        top_vectors = eigenvectors[..., -self.rank :]
        floor = jnp.maximum(eigenvalues[..., :1], 0)[..., None]
        factor = top_vectors * jnp.sqrt(jnp.maximum(top_values[..., None, :] - floor, 1e-12))
        low_rank = factor @ jnp.swapaxes(factor, -1, -2)
        residual = _diagonal(precision - low_rank)
        return _diag_embed(jnp.maximum(residual, 1e-6)) + low_rank


class FullRankGaussian(structure.FullRankStructure, GaussianFamily):
    """``N(μ, Λ⁻¹)`` with ``Λ = L Lᵀ`` for a lower-triangular ``L``."""

    def from_raw(self, raw):
        d = self.latent_dim
        loc, entries = jnp.split(raw, [d], axis=-1)
        rows, cols = np.tril_indices(d)  # row-major, as torch.tril_indices
        tril = jnp.zeros((*raw.shape[:-1], d, d), raw.dtype).at[..., rows, cols].set(entries)
        diagonal = _diagonal(tril)
        positive = jnp.exp(jnp.clip(0.5 * diagonal, *structure.LOG_PRECISION_RANGE))
        tril = tril - _diag_embed(diagonal) + _diag_embed(positive)
        return loc, tril @ jnp.swapaxes(tril, -1, -2)


POSTERIOR_FAMILIES = {
    cls.name: cls for cls in (DiagonalGaussian, LowRankGaussian, FullRankGaussian)
}
"""Gaussian posterior families by name (the guide's ``family=`` option)."""


def get_posterior_family(name: str, latent_dim: int, **options) -> GaussianFamily:
    """Build the posterior family ``name`` for a ``latent_dim``-dimensional latent."""
    return structure.family_class(POSTERIOR_FAMILIES, name)(latent_dim, **options)
