"""Bayesian neural-network regression: a one-hidden-layer tanh MLP.

    W₁ ~ N(0, s₀²)^{H×d},   b₁ ~ N(0, s₀²)^H,   w₂ ~ N(0, s₀²/H)^H,   b₂ ~ N(0, s₀²),
    x_n ~ N(0, I_d),        y_n | x_n, θ ~ N(w₂ᵀ tanh(W₁ x_n + b₁) + b₂, σ²).

The output weights ``w₂`` have prior standard deviation ``s₀/√H`` (scaled by the
fan-in ``H`` of the output layer) so that the prior variance of the function
stays ``O(s₀²)`` as the width grows (Neal 1996, *Bayesian Learning for Neural
Networks*, §2.1). The posterior is multimodal (hidden units can be permuted and
their signs flipped) and has no closed form.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from iai_prob.models.base import LatentSite, TaskFamily, check_positive, check_positive_int

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
    def latent_sites(self) -> tuple[LatentSite, ...]:
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
        hidden = torch.tanh((x.unsqueeze(-2) * w1).sum(-1) + b1)
        return (hidden * w2).sum(-1) + b2

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        tasks, num_points = self.plates(x, point_dims=1)
        zero = x.new_zeros(())
        params = {}
        with tasks:
            for site, scale in zip(self.latent_sites, self._prior_scales().values(), strict=True):
                prior = dist.Normal(zero, scale).expand(list(site.shape))
                params[site.name] = pyro.sample(site.name, prior.to_event(len(site.shape)))
        # Batched parameters have shape (T, 1, *shape): their dim of size 1 is the
        # data dim, so x.unsqueeze(-2) * w1 has shape (T, N, H, d).
        with tasks, pyro.plate(self.data_plate, num_points, dim=-1):
            mean = self._forward(x, *(params[site.name] for site in self.latent_sites))
            return pyro.sample("y", self._likelihood(mean), obs=y)

    def _likelihood(self, output: torch.Tensor):
        """``p(y | f(x))`` for network outputs ``f(x)``."""
        return dist.Normal(output, self.noise_scale)

    def _observe(self, output: torch.Tensor, generator) -> torch.Tensor:
        """Simulate ``y`` for network outputs ``f(x)`` of shape ``(T, N)``."""
        return output + self.noise_scale * torch.randn(output.shape, generator=generator)

    def _simulate(self, num_tasks, num_points, generator):
        theta = {
            site.name: scale * torch.randn(num_tasks, *site.shape, generator=generator)
            for site, scale in zip(self.latent_sites, self._prior_scales().values(), strict=True)
        }
        x = torch.randn(num_tasks, num_points, self.dim, generator=generator)
        mean = self._forward(x, *(theta[site.name].unsqueeze(1) for site in self.latent_sites))
        return theta, x, self._observe(mean, generator)
