"""Bayesian neural-network regression, a one-hidden-layer tanh MLP (NumPyro twin of the
Pyro family).

    W₁ ~ N(0, s₀²)^{H×d},   b₁ ~ N(0, s₀²)^H,   w₂ ~ N(0, s₀²/H)^H,   b₂ ~ N(0, s₀²),
    x_n ~ N(0, I_d),        y_n | x_n, θ ~ N(w₂ᵀ tanh(W₁ x_n + b₁) + b₂, σ²).

The output weights ``w₂`` have prior standard deviation ``s₀/√H`` so that the prior
variance of the function stays ``O(s₀²)`` as the width grows (Neal 1996, *Bayesian
Learning for Neural Networks*, §2.1). The posterior is multimodal and has no closed form.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from iai_prob.numpyro.models.base import LatentSite, TaskFamily, check_positive, check_positive_int

__all__ = ["MLPRegression"]


class MLPRegression(TaskFamily):
    """``y = w₂ᵀ tanh(W₁ x + b₁) + b₂ + ε`` with Gaussian priors and ``ε ~ N(0, noise_scale²)``.

    :param int dim: number of inputs ``d``.
    :param int hidden: number of hidden units ``H``.
    :param float prior_scale: prior std ``s₀`` of ``W₁``, ``b₁`` and ``b₂``; ``w₂`` has ``s₀/√H``.
    :param float noise_scale: observation noise standard deviation ``σ``.
    """

    name = "mlp_regression"

    def __init__(
        self, dim: int = 1, hidden: int = 8, prior_scale: float = 1.0, noise_scale: float = 0.1
    ):
        self.dim = check_positive_int("dim", dim)
        self.hidden = check_positive_int("hidden", hidden)
        self.prior_scale = check_positive("prior_scale", prior_scale)
        self.noise_scale = check_positive("noise_scale", noise_scale)

    @property
    def latent_sites(self):
        return (
            LatentSite("w1", (self.hidden, self.dim), constraints.real),
            LatentSite("b1", (self.hidden,), constraints.real),
            LatentSite("w2", (self.hidden,), constraints.real),
            LatentSite("b2", (), constraints.real),
        )

    def _prior_scales(self) -> dict[str, float]:
        """Prior standard deviation of each site (``w2`` scaled by its fan-in)."""
        return {
            "w1": self.prior_scale,
            "b1": self.prior_scale,
            "w2": self.prior_scale / math.sqrt(self.hidden),
            "b2": self.prior_scale,
        }

    def config(self) -> dict:
        return {
            "dim": self.dim,
            "hidden": self.hidden,
            "prior_scale": self.prior_scale,
            "noise_scale": self.noise_scale,
        }

    @staticmethod
    def _forward(x, w1, b1, w2, b2):
        """Network output for ``x`` of shape ``(..., N, d)``; parameters carry batch dims
        ``(..., 1)`` that broadcast against the data dim."""
        hidden = jnp.tanh((x[..., None, :] * w1).sum(-1) + b1)
        return (hidden * w2).sum(-1) + b2

    def model(self, x, y=None):
        tasks, num_points = self.plates(x, point_dims=1)
        params = {}
        with tasks:
            for site, scale in zip(self.latent_sites, self._prior_scales().values(), strict=True):
                prior = dist.Normal(0.0, scale).expand(list(site.shape))
                params[site.name] = numpyro.sample(site.name, prior.to_event(len(site.shape)))
        # batched parameters have shape (T, 1, *shape): their dim of size 1 is the data dim
        with tasks, numpyro.plate(self.data_plate, num_points, dim=-1):
            mean = self._forward(x, *(params[site.name] for site in self.latent_sites))
            return numpyro.sample("y", self._likelihood(mean), obs=y)

    def _likelihood(self, output):
        """``p(y | f(x))`` for network outputs ``f(x)``."""
        return dist.Normal(output, self.noise_scale)

    def _observe(self, key, output):
        """Simulate ``y`` for network outputs ``f(x)`` of shape ``(T, N)``."""
        return output + self.noise_scale * jax.random.normal(key, output.shape)

    def _simulate(self, key, num_tasks, num_points):
        *site_keys, x_key, y_key = jax.random.split(key, len(self.latent_sites) + 2)
        scales = self._prior_scales().values()
        theta = {
            site.name: scale * jax.random.normal(site_key, (num_tasks, *site.shape))
            for site, scale, site_key in zip(self.latent_sites, scales, site_keys, strict=True)
        }
        x = jax.random.normal(x_key, (num_tasks, num_points, self.dim))
        mean = self._forward(x, *(theta[site.name][:, None] for site in self.latent_sites))
        return theta, x, self._observe(y_key, mean)
