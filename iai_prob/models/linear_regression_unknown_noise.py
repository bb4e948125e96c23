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

from iai_prob.models.base import LatentSite, TaskFamily, check_positive, check_positive_int

__all__ = ["LinearRegressionUnknownNoise"]


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
        constraints = self.ppl.constraints
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
        ppl = self.ppl
        tasks, num_points = self.plates(x, point_dims=1)
        with tasks:
            concentration = ppl.constant(self.noise_concentration, x)
            noise_var = ppl.sample(
                "noise_var", ppl.dist.InverseGamma(concentration, self.noise_rate)
            )
            weight_scale = self.prior_scale * ppl.sqrt(noise_var)[..., None]
            prior = ppl.dist.Normal(ppl.constant(0.0, x), weight_scale)
            w = ppl.sample("w", prior.expand([*noise_var.shape, self.dim]).to_event(1))
        with tasks, ppl.plate(self.data_plate, num_points, dim=-1):
            likelihood = ppl.dist.Normal(ppl.linear_predictor(x, w), ppl.sqrt(noise_var))
            return ppl.sample("y", likelihood, obs=y)

    def _simulate(self, draws, num_tasks, num_points):
        noise_var = self.noise_rate / draws.gamma(self.noise_concentration, (num_tasks,))
        noise_scale = self.ppl.sqrt(noise_var)[:, None]
        w = self.prior_scale * noise_scale * draws.normal((num_tasks, self.dim))
        x = draws.normal((num_tasks, num_points, self.dim))
        noise = noise_scale * draws.normal((num_tasks, num_points))
        y = self.ppl.einsum("tnd,td->tn", x, w) + noise
        return {"w": w, "noise_var": noise_var}, x, y

    def _posterior_params(self, x, y):
        """Cholesky of ``Λ_N``, ``m_N``, ``a_N`` and ``b_N``."""
        ppl = self.ppl
        x, y = ppl.asarray(x), ppl.asarray(y)
        if x.ndim not in (2, 3) or x.shape[-1] != self.dim or x.shape[:-1] != y.shape:
            raise ValueError(
                f"LinearRegressionUnknownNoise(dim={self.dim}) expects x of shape "
                f"([T,] N, {self.dim}) and y of shape ([T,] N); "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        chol = ppl.cholesky(ppl.eye(self.dim, x) / self.prior_scale**2 + x.mT @ x)
        linear = ppl.einsum("...nd,...n->...d", x, y)
        mean = ppl.cholesky_solve(linear[..., None], chol)[..., 0]
        num_points = y.shape[-1]
        concentration = ppl.full(y.shape[:-1], self.noise_concentration + 0.5 * num_points, y)
        rate = self.noise_rate + 0.5 * ((y**2).sum(-1) - (mean * linear).sum(-1))
        return chol, mean, concentration, rate

    def exact_posterior(self, x, y):
        """The normal–inverse-gamma posterior over ``(w, σ²)``
        (``NormalInverseGamma`` of :mod:`~iai_prob.models.pyro_distributions` or
        :mod:`~iai_prob.models.numpyro_distributions`)."""
        ppl = self.ppl
        chol, mean, concentration, rate = self._posterior_params(x, y)
        # V_N = Λ_N⁻¹ = L⁻ᵀ L⁻¹, whose lower Cholesky factor is cholesky(L⁻ᵀ L⁻¹).
        scale_tril = ppl.cholesky(ppl.inverse_from_cholesky(chol))
        return ppl.NormalInverseGamma(mean, scale_tril, concentration, rate)

    def log_evidence(self, x, y):
        chol, _, concentration, rate = self._posterior_params(x, y)
        num_points = y.shape[-1]
        a0, b0 = self.noise_concentration, self.noise_rate
        return (
            -0.5 * num_points * math.log(2 * math.pi)
            - self.dim * math.log(self.prior_scale)
            - 0.5 * self.ppl.log_det_from_cholesky(chol)
            + a0 * math.log(b0)
            - concentration * self.ppl.log(rate)
            + self.ppl.lgamma(concentration)
            - math.lgamma(a0)
        )
