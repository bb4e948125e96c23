"""Bayesian linear regression with unknown noise: the normal–inverse-gamma family.

    σ² ~ InvGamma(a₀, b₀),   w | σ² ~ N(0, σ² s₀² I_d),
    x_n ~ N(0, I_d),         y_n | x_n, w, σ² ~ N(x_nᵀ w, σ²).

The prior is conjugate, so the posterior is normal–inverse-gamma:
``σ² | y ~ InvGamma(a_N, b_N)`` and ``w | σ², y ~ N(m_N, σ² Λ_N⁻¹)`` with

    Λ_N = I/s₀² + XᵀX,   m_N = Λ_N⁻¹ Xᵀy,
    a_N = a₀ + N/2,      b_N = b₀ + ½ (yᵀy − m_Nᵀ Λ_N m_N).

The evidence (a multivariate Student-t marginal of ``y``) is

    log p(y) = −N/2 log 2π − d log s₀ − ½ log det Λ_N
               + a₀ log b₀ − a_N log b_N + log Γ(a_N) − log Γ(a₀)

(Murphy 2007, "Conjugate Bayesian analysis of the Gaussian distribution", §9;
Bishop 2006, §3.3 and exercise 3.23), computed in O(N d²) so it scales to large N.
"""

from __future__ import annotations

import math
from typing import ClassVar

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

from iai_prob.models.base import (
    LatentSite,
    TaskFamily,
    check_positive,
    check_positive_int,
    linear_predictor,
)

__all__ = ["LinearRegressionUnknownNoise", "NormalInverseGamma"]


class _RealVectorPositiveLast(constraints.Constraint):
    """Real vectors whose last coordinate is positive: the support of ``(w, σ²)``."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(value).all(-1) & (value[..., -1] > 0)


real_vector_positive_last = _RealVectorPositiveLast()


class NormalInverseGamma(dist.TorchDistribution):
    """Joint law of ``(w, σ²)`` with ``σ² ~ InvGamma(a, b)`` and ``w | σ² ~ N(m, σ² V)``.

    Values are the flattened vectors ``(w_1, …, w_d, σ²)`` of event shape ``(d + 1,)``.

    :param torch.Tensor loc: mean ``m`` of ``w``, shape ``(..., d)``.
    :param torch.Tensor scale_tril: lower Cholesky factor of ``V``, shape ``(..., d, d)``.
    :param torch.Tensor concentration: shape ``a`` of the inverse gamma, shape ``(...)``.
    :param torch.Tensor rate: scale ``b`` of the inverse gamma, shape ``(...)``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real_vector,
        "scale_tril": constraints.lower_cholesky,
        "concentration": constraints.positive,
        "rate": constraints.positive,
    }
    support = real_vector_positive_last
    has_rsample = True

    def __init__(self, loc, scale_tril, concentration, rate, validate_args=None):
        if loc.dim() < 1 or scale_tril.dim() < 2:
            raise ValueError(
                f"loc must have shape (..., d) and scale_tril (..., d, d); "
                f"got {tuple(loc.shape)} and {tuple(scale_tril.shape)}"
            )
        dim = loc.shape[-1]
        if scale_tril.shape[-2:] != (dim, dim):
            raise ValueError(
                f"scale_tril must have shape (..., {dim}, {dim}), got {tuple(scale_tril.shape)}"
            )
        concentration, rate = broadcast_all(concentration, rate)
        batch_shape = torch.broadcast_shapes(
            loc.shape[:-1], scale_tril.shape[:-2], concentration.shape
        )
        self.loc = loc.expand(*batch_shape, dim)
        self.scale_tril = scale_tril.expand(*batch_shape, dim, dim)
        self.concentration = concentration.expand(batch_shape)
        self.rate = rate.expand(batch_shape)
        super().__init__(batch_shape, torch.Size([dim + 1]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(NormalInverseGamma, _instance)
        batch_shape = torch.Size(batch_shape)
        dim = self.loc.shape[-1]
        new.loc = self.loc.expand(*batch_shape, dim)
        new.scale_tril = self.scale_tril.expand(*batch_shape, dim, dim)
        new.concentration = self.concentration.expand(batch_shape)
        new.rate = self.rate.expand(batch_shape)
        super(NormalInverseGamma, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        a, b = self.concentration, self.rate
        noise_mean = torch.where(a > 1, b / (a - 1), torch.full_like(b, math.inf))
        return torch.cat([self.loc, noise_mean.unsqueeze(-1)], dim=-1)

    @property
    def variance(self) -> torch.Tensor:
        a, b = self.concentration, self.rate
        inf = torch.full_like(b, math.inf)
        noise_mean = torch.where(a > 1, b / (a - 1), inf)
        weight_var = self.scale_tril.pow(2).sum(-1) * noise_mean.unsqueeze(-1)
        noise_var = torch.where(a > 2, noise_mean**2 / (a - 2), inf)
        return torch.cat([weight_var, noise_var.unsqueeze(-1)], dim=-1)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        batch = shape[:-1]
        gamma = torch._standard_gamma(self.concentration.expand(batch)) / self.rate.expand(batch)
        gamma = gamma.clamp(min=torch.finfo(gamma.dtype).tiny)
        noise_var = gamma.reciprocal()
        eps = torch.randn(*batch, shape[-1] - 1, dtype=self.loc.dtype, device=self.loc.device)
        weights = self.loc + noise_var.sqrt().unsqueeze(-1) * (
            self.scale_tril @ eps.unsqueeze(-1)
        ).squeeze(-1)
        return torch.cat([weights, noise_var.unsqueeze(-1)], dim=-1)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        weights, noise_var = value[..., :-1], value[..., -1]
        a, b = self.concentration, self.rate
        diff = weights - self.loc
        scale_tril = self.scale_tril.expand(*diff.shape[:-1], *self.scale_tril.shape[-2:])
        z = torch.linalg.solve_triangular(scale_tril, diff.unsqueeze(-1), upper=False).squeeze(-1)
        dim = diff.shape[-1]
        half_log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_normal = (
            -0.5 * dim * (math.log(2 * math.pi) + noise_var.log())
            - half_log_det
            - 0.5 * z.pow(2).sum(-1) / noise_var
        )
        log_inv_gamma = a * b.log() - torch.lgamma(a) - (a + 1) * noise_var.log() - b / noise_var
        return log_normal + log_inv_gamma


class LinearRegressionUnknownNoise(TaskFamily):
    """``y = xᵀw + ε``, ``ε ~ N(0, σ²)``, with a normal–inverse-gamma prior on ``(w, σ²)``.

    :param int dim: number of covariates ``d``.
    :param float prior_scale: ``s₀``: given ``σ²``, each weight has prior std ``σ s₀``.
    :param float noise_concentration: shape ``a₀`` of the inverse-gamma prior on ``σ²``.
    :param float noise_rate: scale ``b₀`` of the inverse-gamma prior on ``σ²``.
    """

    name = "linear_regression_unknown_noise"
    has_exact_posterior = True

    def __init__(
        self,
        dim: int = 8,
        prior_scale: float = 1.0,
        noise_concentration: float = 3.0,
        noise_rate: float = 1.0,
    ):
        self.dim = check_positive_int("dim", dim)
        self.prior_scale = check_positive("prior_scale", prior_scale)
        self.noise_concentration = check_positive("noise_concentration", noise_concentration)
        self.noise_rate = check_positive("noise_rate", noise_rate)

    @property
    def latent_sites(self) -> tuple[LatentSite, ...]:
        return (
            LatentSite("w", (self.dim,), constraints.real),
            LatentSite("noise_var", (), constraints.positive),
        )

    def config(self) -> dict:
        return {
            "dim": self.dim,
            "prior_scale": self.prior_scale,
            "noise_concentration": self.noise_concentration,
            "noise_rate": self.noise_rate,
        }

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        tasks, num_points = self.plates(x, point_dims=1)
        with tasks:
            noise_prior = dist.InverseGamma(x.new_tensor(self.noise_concentration), self.noise_rate)
            noise_var = pyro.sample("noise_var", noise_prior)
            weight_scale = self.prior_scale * noise_var.sqrt().unsqueeze(-1)
            w = pyro.sample(
                "w",
                dist.Normal(x.new_zeros(()), weight_scale)
                .expand([*noise_var.shape, self.dim])
                .to_event(1),
            )
        with tasks, pyro.plate(self.data_plate, num_points, dim=-1):
            return pyro.sample("y", dist.Normal(linear_predictor(x, w), noise_var.sqrt()), obs=y)

    def _simulate(self, num_tasks, num_points, generator):
        concentration = torch.full((num_tasks,), self.noise_concentration)
        noise_var = self.noise_rate / torch._standard_gamma(concentration, generator=generator)
        noise_scale = noise_var.sqrt().unsqueeze(-1)
        w = self.prior_scale * noise_scale * torch.randn(num_tasks, self.dim, generator=generator)
        x = torch.randn(num_tasks, num_points, self.dim, generator=generator)
        noise = noise_scale * torch.randn(num_tasks, num_points, generator=generator)
        y = torch.einsum("tnd,td->tn", x, w) + noise
        return {"w": w, "noise_var": noise_var}, x, y

    def _posterior_params(self, x: torch.Tensor, y: torch.Tensor):
        """Cholesky of ``Λ_N``, ``m_N``, ``a_N`` and ``b_N``."""
        if x.dim() not in (2, 3) or x.shape[-1] != self.dim or x.shape[:-1] != y.shape:
            raise ValueError(
                f"LinearRegressionUnknownNoise(dim={self.dim}) expects x of shape "
                f"([T,] N, {self.dim}) and y of shape ([T,] N); "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        chol = torch.linalg.cholesky(eye / self.prior_scale**2 + x.mT @ x)
        linear = (x.mT @ y.unsqueeze(-1)).squeeze(-1)
        mean = torch.cholesky_solve(linear.unsqueeze(-1), chol).squeeze(-1)
        num_points = y.shape[-1]
        concentration = y.new_full(y.shape[:-1], self.noise_concentration + 0.5 * num_points)
        rate = self.noise_rate + 0.5 * ((y**2).sum(-1) - (mean * linear).sum(-1))
        return chol, mean, concentration, rate

    def exact_posterior(self, x: torch.Tensor, y: torch.Tensor) -> NormalInverseGamma:
        chol, mean, concentration, rate = self._posterior_params(x, y)
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device).expand_as(chol)
        # V_N = Λ_N⁻¹ = L⁻ᵀ L⁻¹, whose lower Cholesky factor is cholesky(L⁻ᵀ L⁻¹).
        scale_tril = torch.linalg.cholesky(torch.cholesky_solve(eye, chol))
        return NormalInverseGamma(mean, scale_tril, concentration, rate)

    def log_evidence(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        chol, _, concentration, rate = self._posterior_params(x, y)
        num_points = y.shape[-1]
        a0, b0 = self.noise_concentration, self.noise_rate
        log_det_precision = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return (
            -0.5 * num_points * math.log(2 * math.pi)
            - self.dim * math.log(self.prior_scale)
            - 0.5 * log_det_precision
            + a0 * math.log(b0)
            - concentration * rate.log()
            + torch.lgamma(concentration)
            - math.lgamma(a0)
        )
