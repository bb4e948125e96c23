"""Gaussian posterior families over the joint unconstrained latent ``z ∈ ℝ^D``.

The refinement keeps a Gaussian in natural parameters, precision ``Λ`` and
linear term ``η = Λμ`` (stored as ``(μ, Λ)``), because a convex combination of two
natural parameters is again a valid Gaussian (Khan & Lin 2017). A family says
which structure ``Λ`` keeps:

* ``"diagonal"``: ``Λ = diag(λ)``, the mean-field family of ``AutoNormal``;
* ``"low_rank"``: ``Λ = diag(λ) + U Uᵀ`` with ``U ∈ ℝ^{D×r}``;
* ``"full_rank"``: any symmetric positive-definite ``Λ``.

A family's name, options, configuration and raw length are written once for both
backends (:mod:`iai_prob.posterior_families`). Here every family maps raw network
outputs to a state (:meth:`GaussianFamily.from_raw`), projects an arbitrary
positive-definite target onto its structure (:meth:`GaussianFamily.project`; for the
diagonal family this keeps ``Λᵢᵢ``, which makes the mean-field optimum the fixed point
of the refinement), and builds the torch distribution
(:meth:`GaussianFamily.distribution`).
"""

from __future__ import annotations

import math

import torch
from pyro import distributions as dist

from iai_prob.posterior_families import (
    LOG_PRECISION_RANGE,
    DiagonalStructure,
    FamilyStructure,
    FullRankStructure,
    LowRankStructure,
    family_class,
)

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


def _diag_embed_exp(raw: torch.Tensor) -> torch.Tensor:
    return torch.diag_embed(raw.clamp(*LOG_PRECISION_RANGE).exp())


class GaussianFamily(FamilyStructure):
    """Structure of the precision matrix of a Gaussian posterior (see module docstring)."""

    def from_raw(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``(..., num_raw)`` network outputs to ``(μ, Λ)``; zeros give ``N(0, I)``."""
        raise NotImplementedError

    def project(self, precision: torch.Tensor) -> torch.Tensor:
        """Project a symmetric positive-definite ``Λ`` onto the family's structure."""
        return precision

    def distribution(self, loc: torch.Tensor, precision: torch.Tensor):
        """The torch distribution ``N(μ, Λ⁻¹)`` with event shape ``(D,)``."""
        return dist.MultivariateNormal(loc, precision_matrix=precision)


class DiagonalGaussian(DiagonalStructure, GaussianFamily):
    """Mean-field Gaussian ``N(μ, diag(λ)⁻¹)``."""

    def from_raw(self, raw):
        loc, log_precision = raw.split(self.latent_dim, dim=-1)
        return loc, _diag_embed_exp(log_precision)

    def project(self, precision):
        return torch.diag_embed(precision.diagonal(dim1=-2, dim2=-1))

    def distribution(self, loc, precision):
        scale = precision.diagonal(dim1=-2, dim2=-1).rsqrt()
        return dist.Normal(loc, scale).to_event(1)


class LowRankGaussian(LowRankStructure, GaussianFamily):
    """``N(μ, (diag(λ) + U Uᵀ)⁻¹)`` with ``U`` of rank ``rank``."""

    def from_raw(self, raw):
        d = self.latent_dim
        loc, log_precision, factor = raw.split([d, d, d * self.rank], dim=-1)
        factor = factor.reshape(*factor.shape[:-1], d, self.rank)
        return loc, _diag_embed_exp(log_precision) + factor @ factor.mT

    def project(self, precision):
        """Keep the top ``rank`` eigen-directions exactly and the rest on the diagonal."""
        if self.rank >= self.latent_dim:
            return precision
        eigenvalues, eigenvectors = torch.linalg.eigh(precision)
        top_values = eigenvalues[..., -self.rank :]
        top_vectors = eigenvectors[..., -self.rank :]
        floor = eigenvalues[..., :1].clamp_min(0).unsqueeze(-1)  # smallest eigenvalue
        factor = top_vectors * (top_values.unsqueeze(-2) - floor).clamp_min(1e-12).sqrt()
        low_rank = factor @ factor.mT
        residual = (precision - low_rank).diagonal(dim1=-2, dim2=-1)
        return torch.diag_embed(residual.clamp_min(1e-6)) + low_rank


class FullRankGaussian(FullRankStructure, GaussianFamily):
    """``N(μ, Λ⁻¹)`` with ``Λ = L Lᵀ`` for a lower-triangular ``L``."""

    def from_raw(self, raw):
        d = self.latent_dim
        loc, entries = raw.split([d, d * (d + 1) // 2], dim=-1)
        rows, cols = torch.tril_indices(d, d, device=raw.device)
        tril = raw.new_zeros(*raw.shape[:-1], d, d)
        tril[..., rows, cols] = entries
        diagonal = tril.diagonal(dim1=-2, dim2=-1)
        tril = (
            tril
            - torch.diag_embed(diagonal)
            + torch.diag_embed((0.5 * diagonal).clamp(*LOG_PRECISION_RANGE).exp())
        )
        return loc, tril @ tril.mT


POSTERIOR_FAMILIES = {
    cls.name: cls for cls in (DiagonalGaussian, LowRankGaussian, FullRankGaussian)
}
"""Gaussian posterior families by name (the guide's ``family=`` option)."""


def get_posterior_family(name: str, latent_dim: int, **options) -> GaussianFamily:
    """Build the posterior family ``name`` for a ``latent_dim``-dimensional latent."""
    return family_class(POSTERIOR_FAMILIES, name)(latent_dim, **options)


def covariance_tril(precision: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor ``L`` of the covariance, ``L Lᵀ = Λ⁻¹``, without forming
    ``Λ⁻¹``.

    With ``J`` the exchange matrix (indices reversed), factor the reversed precision
    ``J Λ J = R Rᵀ``; then ``Λ⁻¹ = (J R⁻ᵀ J)(J R⁻ᵀ J)ᵀ``, and ``J R⁻ᵀ J`` is lower
    triangular with a positive diagonal, so it is ``L``. One Cholesky factorization and
    one triangular inverse, where inverting ``Λ`` and factoring the inverse took two
    factorizations and an inverse, each adding rounding for an ill-conditioned ``Λ`` (a
    count model on raw units in float32 reaches condition numbers past 1e7); the checks
    that a state can be sampled factor the same matrix (:func:`reversed_precision`).
    """
    reversed_factor = torch.linalg.cholesky(reversed_precision(precision))
    identity = torch.eye(precision.shape[-1], dtype=precision.dtype, device=precision.device)
    upper = torch.linalg.solve_triangular(reversed_factor.mT, identity, upper=True)
    return upper.flip(-2, -1)


def reversed_precision(precision: torch.Tensor) -> torch.Tensor:
    """``J Λ J``, the precision with its indices reversed: the matrix
    :func:`covariance_tril` and :func:`gaussian_entropy` factor, so that
    ``torch.linalg.cholesky_ex(reversed_precision(Λ))`` says exactly where both succeed."""
    return precision.flip(-2, -1)


def gaussian_entropy(precision: torch.Tensor) -> torch.Tensor:
    """Entropy of ``N(μ, Λ⁻¹)``: ``D/2 (1 + log 2π) − ½ log det Λ``, shape ``(...,)``.

    From one Cholesky factor of ``J Λ J`` (:func:`reversed_precision`, the factor
    :func:`covariance_tril` uses; ``det J Λ J = det Λ``); building a
    ``MultivariateNormal`` from the precision would also invert it.
    """
    dim = precision.shape[-1]
    factor = torch.linalg.cholesky(reversed_precision(precision))
    half_log_det = factor.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * dim * (1.0 + math.log(2 * math.pi)) - half_log_det


def gaussian_kl(loc_p, precision_p, loc_q, precision_q) -> torch.Tensor:
    """``KL(N(μ_p, Λ_p⁻¹) ‖ N(μ_q, Λ_q⁻¹))`` per batch entry, in natural parameters:

    ``½ [tr(Λ_q Λ_p⁻¹) + (μ_q − μ_p)ᵀ Λ_q (μ_q − μ_p) − D + log det Λ_p − log det Λ_q]``.
    """
    chol_p = torch.linalg.cholesky(precision_p)
    trace = (precision_q * torch.cholesky_inverse(chol_p)).sum((-1, -2))
    delta = (loc_q - loc_p).unsqueeze(-1)
    mahalanobis = (delta.mT @ precision_q @ delta)[..., 0, 0]
    log_det_p = 2 * chol_p.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    log_det_q = 2 * torch.linalg.cholesky(precision_q).diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (trace + mahalanobis - loc_p.shape[-1] + log_det_p - log_det_q)


def symmetrize(matrix: torch.Tensor) -> torch.Tensor:
    """``(A + Aᵀ)/2``."""
    return 0.5 * (matrix + matrix.mT)


def absolute_eigenvalues(
    matrix: torch.Tensor, floor: float, *, traceable: bool = False
) -> torch.Tensor:
    """``V max(|λ|, floor) Vᵀ`` for ``matrix = V diag(λ) Vᵀ``: a positive-definite curvature.

    Where the log density is not concave (a saddle of ``log σ`` and weights, a mixture),
    negative curvature is taken with its magnitude, as in saddle-free Newton (Dauphin et
    al. 2014), rather than clamped to a tiny floor, which would make a huge step along that
    direction; concave directions are unchanged.

    A batch element whose ``matrix − floor·I`` has a Cholesky factor already has every
    eigenvalue above the floor and is returned as it is (symmetrized); only the others
    are decomposed, so a log-concave model never pays for ``eigh``.

    A batch element with a non-finite entry (the curvature of a log density at the edge
    of its support, e.g. a mixture weight of 0) gives an all-NaN result for that element
    alone, which the refinement's safeguard rejects (that task keeps its state), instead
    of an error for the whole batch. Where float32 ``eigh`` fails to converge (an
    ill-conditioned curvature somewhere in the batch), the batch is decomposed in float64.

    ``traceable=True`` decomposes every element and selects with ``torch.where``: the
    same result without a Python branch on values, for a graph traced once
    (:mod:`~iai_prob.inference.compiled_log_joint`).
    """
    symmetric = symmetrize(matrix)
    dim = matrix.shape[-1]
    eye = torch.eye(dim, dtype=matrix.dtype, device=matrix.device)
    finite = torch.isfinite(symmetric).flatten(-2).all(-1)
    shifted = torch.where(finite[..., None, None], symmetric - floor * eye, -eye)
    above_floor = finite & (torch.linalg.cholesky_ex(shifted)[1] == 0)
    if traceable:
        decomposed = _floored_absolute_eigenvalues(symmetric.reshape(-1, dim, dim), floor)
        return torch.where(
            above_floor[..., None, None], symmetric, decomposed.reshape(symmetric.shape)
        )
    if bool(above_floor.all()):
        return symmetric
    flat = symmetric.reshape(-1, dim, dim)
    decompose = ~above_floor.reshape(-1)
    result = flat.clone()
    result[decompose] = _floored_absolute_eigenvalues(flat[decompose], floor)
    return result.reshape(symmetric.shape)


def _floored_absolute_eigenvalues(symmetric: torch.Tensor, floor: float) -> torch.Tensor:
    """:func:`absolute_eigenvalues` by ``eigh``, for symmetric ``(B, D, D)``."""
    finite = torch.isfinite(symmetric).flatten(-2).all(-1)[..., None, None]
    # distinct placeholder eigenvalues keep eigh well conditioned for the masked elements
    placeholder = torch.diag(
        torch.arange(1, symmetric.shape[-1] + 1, dtype=symmetric.dtype, device=symmetric.device)
    )
    symmetric = torch.where(finite, symmetric, placeholder)
    try:
        eigenvalues, eigenvectors = torch.linalg.eigh(symmetric)
    except torch.linalg.LinAlgError:  # float32 eigh can fail to converge; float64 does not
        eigenvalues, eigenvectors = torch.linalg.eigh(symmetric.double())
        eigenvalues, eigenvectors = (
            eigenvalues.to(symmetric.dtype),
            eigenvectors.to(symmetric.dtype),
        )
    result = (eigenvectors * eigenvalues.abs().clamp_min(floor).unsqueeze(-2)) @ eigenvectors.mT
    return torch.where(finite, result, math.nan)
