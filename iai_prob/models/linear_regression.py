"""Bayesian linear regression with known noise: the conjugate reference family.

    w ~ N(0, s₀² I_d),   x_n ~ N(0, I_d),   y_n | x_n, w ~ N(x_nᵀ w, σ²).

The posterior is Gaussian with precision ``Λ_N = I/s₀² + XᵀX/σ²`` and mean
``m_N = Λ_N⁻¹ Xᵀy/σ²``; the evidence is
``log p(y) = −N/2 log(2πσ²) − d log s₀ − ½ log det Λ_N − ½ (yᵀy/σ² − m_Nᵀ Λ_N m_N)``
(Bishop 2006, §3.3 and §3.5), computed in O(N d²) so it scales to large N.
"""

from __future__ import annotations

import math

from iai_prob.models.base import LatentSite, TaskFamily, check_positive, check_positive_int

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
        return (LatentSite("w", (self.dim,), self.ppl.constraints.real),)

    def config(self) -> dict:
        return {"dim": self.dim, "noise_scale": self.noise_scale, "prior_scale": self.prior_scale}

    def model(self, x, y=None):
        ppl = self.ppl
        tasks, num_points = self.plates(x, point_dims=1)
        with tasks:
            prior = ppl.dist.Normal(ppl.constant(0.0, x), self.prior_scale)
            w = ppl.sample("w", prior.expand([self.dim]).to_event(1))
        with tasks, ppl.plate(self.data_plate, num_points, dim=-1):
            mean = ppl.linear_predictor(x, w)
            return ppl.sample("y", ppl.dist.Normal(mean, self.noise_scale), obs=y)

    def _simulate(self, draws, num_tasks, num_points):
        w = self.prior_scale * draws.normal((num_tasks, self.dim))
        x = draws.normal((num_tasks, num_points, self.dim))
        noise = self.noise_scale * draws.normal((num_tasks, num_points))
        y = self.ppl.einsum("tnd,td->tn", x, w) + noise
        return {"w": w}, x, y

    def _posterior_natural(self, x, y):
        """Posterior precision ``Λ_N`` and linear term ``η_N = Xᵀy/σ²``."""
        x, y = self.ppl.asarray(x), self.ppl.asarray(y)
        if x.shape[-1] != self.dim or x.shape[:-1] != y.shape:
            raise ValueError(
                f"LinearRegression(dim={self.dim}) expects x of shape (..., N, {self.dim}) and "
                f"y of shape (..., N); got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        noise_precision = self.noise_scale**-2
        precision = self.ppl.eye(self.dim, x) / self.prior_scale**2 + noise_precision * x.mT @ x
        linear = noise_precision * self.ppl.einsum("...nd,...n->...d", x, y)
        return precision, linear

    def exact_posterior(self, x, y):
        """``N(m_N, Λ_N⁻¹)`` over ``w``."""
        precision, linear = self._posterior_natural(x, y)
        mean = self.ppl.solve(precision, linear[..., None])[..., 0]
        return self.ppl.dist.MultivariateNormal(mean, precision_matrix=precision)

    def log_evidence(self, x, y):
        precision, linear = self._posterior_natural(x, y)
        chol = self.ppl.cholesky(precision)
        mean = self.ppl.cholesky_solve(linear[..., None], chol)[..., 0]
        num_points = y.shape[-1]
        quadratic = (y**2).sum(-1) / self.noise_scale**2 - (mean * linear).sum(-1)
        return (
            -0.5 * num_points * math.log(2 * math.pi * self.noise_scale**2)
            - self.dim * math.log(self.prior_scale)
            - 0.5 * self.ppl.log_det_from_cholesky(chol)
            - 0.5 * quadratic
        )
