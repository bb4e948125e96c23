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
        real = self.ppl.constraints.real
        return (
            LatentSite("w1", (self.hidden, self.dim), real),
            LatentSite("b1", (self.hidden,), real),
            LatentSite("w2", (self.hidden,), real),
            LatentSite("b2", (), real),
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

    def _forward(self, x, w1, b1, w2, b2):
        """Network output for ``x`` of shape ``(..., N, d)``; parameters carry batch dims
        ``(..., 1)`` that broadcast against the data dim."""
        hidden = self.ppl.tanh((x[..., None, :] * w1).sum(-1) + b1)
        return (hidden * w2).sum(-1) + b2

    def model(self, x, y=None):
        ppl = self.ppl
        tasks, num_points = self.plates(x, point_dims=1)
        zero = ppl.constant(0.0, x)
        params = {}
        with tasks:
            for site, scale in zip(self.latent_sites, self._prior_scales().values(), strict=True):
                prior = ppl.dist.Normal(zero, scale).expand(list(site.shape))
                params[site.name] = ppl.sample(site.name, prior.to_event(len(site.shape)))
        # Batched parameters have shape (T, 1, *shape): their dim of size 1 is the
        # data dim, so x[..., None, :] * w1 has shape (T, N, H, d).
        with tasks, ppl.plate(self.data_plate, num_points, dim=-1):
            mean = self._forward(x, *(params[site.name] for site in self.latent_sites))
            return ppl.sample("y", self._likelihood(mean), obs=y)

    def _likelihood(self, output):
        """``p(y | f(x))`` for network outputs ``f(x)``."""
        return self.ppl.dist.Normal(output, self.noise_scale)

    def _observe(self, draws, output):
        """Simulate ``y`` for network outputs ``f(x)`` of shape ``(T, N)``."""
        return output + self.noise_scale * draws.normal(output.shape)

    def _simulate(self, draws, num_tasks, num_points):
        scales = self._prior_scales().values()
        theta = {
            site.name: scale * draws.normal((num_tasks, *site.shape))
            for site, scale in zip(self.latent_sites, scales, strict=True)
        }
        x = draws.normal((num_tasks, num_points, self.dim))
        mean = self._forward(x, *(theta[site.name][:, None] for site in self.latent_sites))
        return theta, x, self._observe(draws, mean)
