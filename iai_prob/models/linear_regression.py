"""Bayesian linear regression with known noise: the conjugate reference family.

    w ~ N(0, s₀² I_d),   x_n ~ N(0, I_d),   y_n | x_n, w ~ N(x_nᵀ w, σ²).

The posterior is Gaussian with precision ``Λ_N = I/s₀² + XᵀX/σ²`` and mean
``m_N = Λ_N⁻¹ Xᵀy/σ²``; the evidence is
``log p(y) = −N/2 log(2πσ²) − d log s₀ − ½ log det Λ_N − ½ (yᵀy/σ² − m_Nᵀ Λ_N m_N)``
(Bishop 2006, §3.3 and §3.5), computed in O(N d²) so it scales to large N.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from iai_prob.models.base import (
    LatentSite,
    TaskFamily,
    check_positive,
    check_positive_int,
    linear_predictor,
)

__all__ = ["LinearRegression"]


class LinearRegression(TaskFamily):
    """``y = xᵀw + ε`` with ``w ~ N(0, prior_scale² I)`` and known ``ε ~ N(0, noise_scale²)``.

    :param int dim: number of covariates ``d``.
    :param float noise_scale: observation noise standard deviation ``σ``.
    :param float prior_scale: prior standard deviation ``s₀`` of each weight.
    """

    name = "linear_regression"
    has_exact_posterior = True

    def __init__(self, dim: int = 8, noise_scale: float = 0.5, prior_scale: float = 1.0):
        self.dim = check_positive_int("dim", dim)
        self.noise_scale = check_positive("noise_scale", noise_scale)
        self.prior_scale = check_positive("prior_scale", prior_scale)

    @property
    def latent_sites(self) -> tuple[LatentSite, ...]:
        return (LatentSite("w", (self.dim,), constraints.real),)

    def config(self) -> dict:
        return {"dim": self.dim, "noise_scale": self.noise_scale, "prior_scale": self.prior_scale}

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        tasks, num_points = self.plates(x, point_dims=1)
        with tasks:
            w = pyro.sample(
                "w", dist.Normal(x.new_zeros(()), self.prior_scale).expand([self.dim]).to_event(1)
            )
        with tasks, pyro.plate(self.data_plate, num_points, dim=-1):
            return pyro.sample("y", dist.Normal(linear_predictor(x, w), self.noise_scale), obs=y)

    def _simulate(self, num_tasks, num_points, generator):
        w = self.prior_scale * torch.randn(num_tasks, self.dim, generator=generator)
        x = torch.randn(num_tasks, num_points, self.dim, generator=generator)
        noise = self.noise_scale * torch.randn(num_tasks, num_points, generator=generator)
        y = torch.einsum("tnd,td->tn", x, w) + noise
        return {"w": w}, x, y

    def _posterior_natural(self, x: torch.Tensor, y: torch.Tensor):
        """Posterior precision ``Λ_N`` and linear term ``η_N = Xᵀy/σ²``."""
        if x.shape[-1] != self.dim or x.shape[:-1] != y.shape:
            raise ValueError(
                f"LinearRegression(dim={self.dim}) expects x of shape (..., N, {self.dim}) and "
                f"y of shape (..., N); got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        noise_precision = self.noise_scale**-2
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        precision = eye / self.prior_scale**2 + noise_precision * x.mT @ x
        linear = noise_precision * (x.mT @ y.unsqueeze(-1)).squeeze(-1)
        return precision, linear

    def exact_posterior(self, x: torch.Tensor, y: torch.Tensor) -> dist.MultivariateNormal:
        precision, linear = self._posterior_natural(x, y)
        chol = torch.linalg.cholesky(precision)
        scale_tril = torch.linalg.cholesky(torch.cholesky_inverse(chol))
        mean = torch.cholesky_solve(linear.unsqueeze(-1), chol)
        return dist.MultivariateNormal(mean.squeeze(-1), scale_tril=scale_tril)

    def log_evidence(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        precision, linear = self._posterior_natural(x, y)
        chol = torch.linalg.cholesky(precision)
        mean = torch.cholesky_solve(linear.unsqueeze(-1), chol).squeeze(-1)
        num_points = y.shape[-1]
        log_det_precision = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        quadratic = (y**2).sum(-1) / self.noise_scale**2 - (mean * linear).sum(-1)
        return (
            -0.5 * num_points * math.log(2 * math.pi * self.noise_scale**2)
            - self.dim * math.log(self.prior_scale)
            - 0.5 * log_det_precision
            - 0.5 * quadratic
        )
