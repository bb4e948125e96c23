"""Bayesian linear regression with known noise (NumPyro twin of the Pyro family).

    w ~ N(0, s₀² I_d),   x_n ~ N(0, I_d),   y_n | x_n, w ~ N(x_nᵀ w, σ²);

posterior precision ``Λ_N = I/s₀² + XᵀX/σ²``, mean ``m_N = Λ_N⁻¹ Xᵀy/σ²`` and evidence
``log p(y) = −N/2 log(2πσ²) − d log s₀ − ½ log det Λ_N − ½ (yᵀy/σ² − m_Nᵀ Λ_N m_N)``
(Bishop 2006, §3.3 and §3.5).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from iai_prob.numpyro.models.base import LatentSite, TaskFamily, check_positive, check_positive_int

__all__ = ["LinearRegression"]


class LinearRegression(TaskFamily):
    """``y = xᵀw + ε``, ``w ~ N(0, prior_scale² I)``, ``ε ~ N(0, noise_scale²)``."""

    name = "linear_regression"
    has_exact_posterior = True

    def __init__(self, dim: int = 8, noise_scale: float = 0.5, prior_scale: float = 1.0):
        self.dim = check_positive_int("dim", dim)
        self.noise_scale = check_positive("noise_scale", noise_scale)
        self.prior_scale = check_positive("prior_scale", prior_scale)

    @property
    def latent_sites(self):
        return (LatentSite("w", (self.dim,), constraints.real),)

    def config(self) -> dict:
        return {"dim": self.dim, "noise_scale": self.noise_scale, "prior_scale": self.prior_scale}

    def model(self, x, y=None):
        tasks, num_points = self.plates(x, point_dims=1)
        with tasks:
            w = numpyro.sample(
                "w", dist.Normal(0.0, self.prior_scale).expand([self.dim]).to_event(1)
            )
        with tasks, numpyro.plate(self.data_plate, num_points, dim=-1):
            return numpyro.sample("y", dist.Normal((x * w).sum(-1), self.noise_scale), obs=y)

    def _simulate(self, key, num_tasks, num_points):
        w_key, x_key, noise_key = jax.random.split(key, 3)
        w = self.prior_scale * jax.random.normal(w_key, (num_tasks, self.dim))
        x = jax.random.normal(x_key, (num_tasks, num_points, self.dim))
        noise = self.noise_scale * jax.random.normal(noise_key, (num_tasks, num_points))
        return {"w": w}, x, jnp.einsum("tnd,td->tn", x, w) + noise

    def _posterior_natural(self, x, y):
        if x.shape[-1] != self.dim or x.shape[:-1] != y.shape:
            raise ValueError(
                f"LinearRegression(dim={self.dim}) expects x of shape (..., N, {self.dim}) and "
                f"y of shape (..., N); got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        noise_precision = self.noise_scale**-2
        precision = jnp.eye(self.dim) / self.prior_scale**2 + noise_precision * (
            jnp.swapaxes(x, -1, -2) @ x
        )
        linear = noise_precision * jnp.einsum("...nd,...n->...d", x, y)
        return precision, linear

    def exact_posterior(self, x, y):
        """``N(m_N, Λ_N⁻¹)`` over ``w``."""
        precision, linear = self._posterior_natural(x, y)
        mean = jnp.linalg.solve(precision, linear[..., None])[..., 0]
        return dist.MultivariateNormal(mean, precision_matrix=precision)

    def log_evidence(self, x, y):
        precision, linear = self._posterior_natural(x, y)
        chol = jnp.linalg.cholesky(precision)
        mean = jnp.linalg.solve(precision, linear[..., None])[..., 0]
        log_det_precision = 2 * jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)
        quadratic = (y**2).sum(-1) / self.noise_scale**2 - (mean * linear).sum(-1)
        return (
            -0.5 * y.shape[-1] * math.log(2 * math.pi * self.noise_scale**2)
            - self.dim * math.log(self.prior_scale)
            - 0.5 * log_det_precision
            - 0.5 * quadratic
        )
