"""Bayesian linear regression with unknown noise, the normal–inverse-gamma family (NumPyro
twin of the Pyro family).

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

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.linalg import cho_solve, solve_triangular
from jax.scipy.special import gammaln
from numpyro.distributions import constraints
from numpyro.distributions.util import promote_shapes

from iai_prob.numpyro.models.base import LatentSite, TaskFamily, check_positive, check_positive_int

__all__ = ["LinearRegressionUnknownNoise", "NormalInverseGamma", "real_vector_positive_last"]


class _RealVectorPositiveLast(constraints.ParameterFreeConstraint):
    """Real vectors whose last coordinate is positive: the support of ``(w, σ²)``."""

    event_dim = 1

    def __call__(self, x):
        return jnp.isfinite(x).all(-1) & (x[..., -1] > 0)

    def feasible_like(self, prototype):
        return jnp.ones_like(prototype)


real_vector_positive_last = _RealVectorPositiveLast()
"""The support of :class:`NormalInverseGamma`."""


class NormalInverseGamma(dist.Distribution):
    """Joint law of ``(w, σ²)`` with ``σ² ~ InvGamma(a, b)`` and ``w | σ² ~ N(m, σ² V)``.

    Values are the flattened vectors ``(w_1, …, w_d, σ²)`` of event shape ``(d + 1,)``.

    :param loc: mean ``m`` of ``w``, shape ``(..., d)``.
    :param scale_tril: lower Cholesky factor of ``V``, shape ``(..., d, d)``.
    :param concentration: shape ``a`` of the inverse gamma, shape ``(...)``.
    :param rate: scale ``b`` of the inverse gamma, shape ``(...)``.
    """

    arg_constraints: ClassVar[dict] = {
        "loc": constraints.real_vector,
        "scale_tril": constraints.lower_cholesky,
        "concentration": constraints.positive,
        "rate": constraints.positive,
    }
    support = real_vector_positive_last
    reparametrized_params: ClassVar[list[str]] = ["loc", "scale_tril", "concentration", "rate"]

    def __init__(self, loc, scale_tril, concentration, rate, *, validate_args=None):
        loc, scale_tril = jnp.asarray(loc), jnp.asarray(scale_tril)
        if loc.ndim < 1 or scale_tril.ndim < 2:
            raise ValueError(
                f"loc must have shape (..., d) and scale_tril (..., d, d); "
                f"got {loc.shape} and {scale_tril.shape}"
            )
        dim = loc.shape[-1]
        if scale_tril.shape[-2:] != (dim, dim):
            raise ValueError(
                f"scale_tril must have shape (..., {dim}, {dim}), got {scale_tril.shape}"
            )
        concentration, rate = promote_shapes(jnp.asarray(concentration), jnp.asarray(rate))
        batch_shape = jnp.broadcast_shapes(
            loc.shape[:-1], scale_tril.shape[:-2], concentration.shape, rate.shape
        )
        self.loc = jnp.broadcast_to(loc, (*batch_shape, dim))
        self.scale_tril = jnp.broadcast_to(scale_tril, (*batch_shape, dim, dim))
        self.concentration = jnp.broadcast_to(concentration, batch_shape)
        self.rate = jnp.broadcast_to(rate, batch_shape)
        super().__init__(batch_shape, (dim + 1,), validate_args=validate_args)

    def _noise_mean(self):
        a, b = self.concentration, self.rate
        return jnp.where(a > 1, b / (a - 1), jnp.inf)

    @property
    def mean(self):
        return jnp.concatenate([self.loc, self._noise_mean()[..., None]], axis=-1)

    @property
    def variance(self):
        noise_mean = self._noise_mean()
        weight_var = (self.scale_tril**2).sum(-1) * noise_mean[..., None]
        noise_var = jnp.where(
            self.concentration > 2, noise_mean**2 / (self.concentration - 2), jnp.inf
        )
        return jnp.concatenate([weight_var, noise_var[..., None]], axis=-1)

    def sample(self, key, sample_shape=()):
        gamma_key, normal_key = jax.random.split(key)
        batch = tuple(sample_shape) + self.batch_shape
        gamma = jax.random.gamma(gamma_key, self.concentration, batch) / self.rate
        noise_var = 1.0 / jnp.maximum(gamma, jnp.finfo(gamma.dtype).tiny)
        eps = jax.random.normal(normal_key, (*batch, self.loc.shape[-1]))
        weights = (
            self.loc + jnp.sqrt(noise_var)[..., None] * (self.scale_tril @ eps[..., None])[..., 0]
        )
        return jnp.concatenate([weights, noise_var[..., None]], axis=-1)

    def log_prob(self, value):
        weights, noise_var = value[..., :-1], value[..., -1]
        a, b = self.concentration, self.rate
        diff = weights - self.loc
        scale_tril = jnp.broadcast_to(
            self.scale_tril, (*diff.shape[:-1], *self.scale_tril.shape[-2:])
        )
        z = solve_triangular(scale_tril, diff[..., None], lower=True)[..., 0]
        dim = diff.shape[-1]
        half_log_det = jnp.log(jnp.diagonal(self.scale_tril, axis1=-2, axis2=-1)).sum(-1)
        log_normal = (
            -0.5 * dim * (math.log(2 * math.pi) + jnp.log(noise_var))
            - half_log_det
            - 0.5 * (z**2).sum(-1) / noise_var
        )
        log_inv_gamma = a * jnp.log(b) - gammaln(a) - (a + 1) * jnp.log(noise_var) - b / noise_var
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
    def latent_sites(self):
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

    def model(self, x, y=None):
        tasks, num_points = self.plates(x, point_dims=1)
        with tasks:
            noise_var = numpyro.sample(
                "noise_var", dist.InverseGamma(self.noise_concentration, self.noise_rate)
            )
            weight_scale = self.prior_scale * jnp.sqrt(noise_var)[..., None]
            w = numpyro.sample(
                "w",
                dist.Normal(0.0, weight_scale)
                .expand([*jnp.shape(noise_var), self.dim])
                .to_event(1),
            )
        with tasks, numpyro.plate(self.data_plate, num_points, dim=-1):
            return numpyro.sample("y", dist.Normal((x * w).sum(-1), jnp.sqrt(noise_var)), obs=y)

    def _simulate(self, key, num_tasks, num_points):
        gamma_key, w_key, x_key, noise_key = jax.random.split(key, 4)
        noise_var = self.noise_rate / jax.random.gamma(
            gamma_key, self.noise_concentration, (num_tasks,)
        )
        noise_scale = jnp.sqrt(noise_var)[:, None]
        w = self.prior_scale * noise_scale * jax.random.normal(w_key, (num_tasks, self.dim))
        x = jax.random.normal(x_key, (num_tasks, num_points, self.dim))
        noise = noise_scale * jax.random.normal(noise_key, (num_tasks, num_points))
        y = jnp.einsum("tnd,td->tn", x, w) + noise
        return {"w": w, "noise_var": noise_var}, x, y

    def _posterior_params(self, x, y):
        """Cholesky of ``Λ_N``, ``m_N``, ``a_N`` and ``b_N``."""
        x, y = jnp.asarray(x), jnp.asarray(y)
        if x.ndim not in (2, 3) or x.shape[-1] != self.dim or x.shape[:-1] != y.shape:
            raise ValueError(
                f"LinearRegressionUnknownNoise(dim={self.dim}) expects x of shape "
                f"([T,] N, {self.dim}) and y of shape ([T,] N); got {x.shape} and {y.shape}"
            )
        precision = jnp.eye(self.dim) / self.prior_scale**2 + jnp.swapaxes(x, -1, -2) @ x
        chol = jnp.linalg.cholesky(precision)
        linear = jnp.einsum("...nd,...n->...d", x, y)
        mean = cho_solve((chol, True), linear[..., None])[..., 0]
        num_points = y.shape[-1]
        concentration = jnp.full(y.shape[:-1], self.noise_concentration + 0.5 * num_points)
        rate = self.noise_rate + 0.5 * ((y**2).sum(-1) - (mean * linear).sum(-1))
        return chol, mean, concentration, rate

    def exact_posterior(self, x, y) -> NormalInverseGamma:
        """The normal–inverse-gamma posterior over ``(w, σ²)``."""
        chol, mean, concentration, rate = self._posterior_params(x, y)
        eye = jnp.broadcast_to(jnp.eye(self.dim), chol.shape)
        # V_N = Λ_N⁻¹ = L⁻ᵀ L⁻¹, whose lower Cholesky factor is cholesky(L⁻ᵀ L⁻¹)
        scale_tril = jnp.linalg.cholesky(cho_solve((chol, True), eye))
        return NormalInverseGamma(mean, scale_tril, concentration, rate)

    def log_evidence(self, x, y):
        chol, _, concentration, rate = self._posterior_params(x, y)
        num_points = jnp.shape(y)[-1]
        a0, b0 = self.noise_concentration, self.noise_rate
        log_det_precision = 2 * jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)
        return (
            -0.5 * num_points * math.log(2 * math.pi)
            - self.dim * math.log(self.prior_scale)
            - 0.5 * log_det_precision
            + a0 * math.log(b0)
            - concentration * jnp.log(rate)
            + gammaln(concentration)
            - math.lgamma(a0)
        )
