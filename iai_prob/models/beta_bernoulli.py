"""Beta–Bernoulli coin flips: the simplest conjugate generative family.

    p ~ Beta(α, β),   y_n | p ~ Bernoulli(p)   (n = 1..N, no covariates).

With ``k = Σ_n y_n`` heads the posterior is ``Beta(α + k, β + N − k)`` and the
evidence is ``log p(y) = log B(α + k, β + N − k) − log B(α, β)`` with ``B`` the
beta function (Gelman et al. 2013, *Bayesian Data Analysis*, §2.4).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from iai_prob.models.base import LatentSite, check_positive
from iai_prob.models.generative import GenerativeTaskFamily

__all__ = ["BetaBernoulli"]


class BetaBernoulli(GenerativeTaskFamily):
    """Coin flips ``y_n ~ Bernoulli(p)`` with ``p ~ Beta(concentration1, concentration0)``.

    :param float concentration1: ``α``, the prior pseudo-count of ones.
    :param float concentration0: ``β``, the prior pseudo-count of zeros.
    """

    name = "beta_bernoulli"
    has_exact_posterior = True
    observation_shape = ()

    def __init__(self, concentration1: float = 1.0, concentration0: float = 1.0):
        self.concentration1 = check_positive("concentration1", concentration1)
        self.concentration0 = check_positive("concentration0", concentration0)

    @property
    def latent_sites(self) -> tuple[LatentSite, ...]:
        return (LatentSite("probs", (), constraints.unit_interval),)

    def config(self) -> dict:
        return {"concentration1": self.concentration1, "concentration0": self.concentration0}

    def model(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        tasks, num_points, like = self._data_plates(x, y)
        with tasks:
            prior = dist.Beta(
                like.new_tensor(self.concentration1), like.new_tensor(self.concentration0)
            )
            probs = pyro.sample("probs", prior)
        with tasks, pyro.plate(self.data_plate, num_points, dim=-1):
            return pyro.sample("y", dist.Bernoulli(probs), obs=y)

    def _simulate(self, num_tasks, num_points, generator):
        shape = (num_tasks,)
        ones = torch._standard_gamma(torch.full(shape, self.concentration1), generator=generator)
        zeros = torch._standard_gamma(torch.full(shape, self.concentration0), generator=generator)
        probs = ones / (ones + zeros)
        y = torch.bernoulli(probs.unsqueeze(-1).expand(num_tasks, num_points), generator=generator)
        return {"probs": probs}, self._no_covariates(num_tasks, num_points), y

    def _posterior_params(self, x: torch.Tensor | None, y: torch.Tensor):
        y = self._observations(x, y)
        if not ((y == 0) | (y == 1)).all():
            raise ValueError("BetaBernoulli expects y with values in {0, 1}")
        ones = y.to(self._float_like(x, y).dtype).sum(-1)
        return self.concentration1 + ones, self.concentration0 + y.shape[-1] - ones

    def exact_posterior(self, x: torch.Tensor | None, y: torch.Tensor) -> dist.Distribution:
        concentration1, concentration0 = self._posterior_params(x, y)
        return dist.Beta(concentration1.unsqueeze(-1), concentration0.unsqueeze(-1)).to_event(1)

    def log_evidence(self, x: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        concentration1, concentration0 = self._posterior_params(x, y)
        prior = torch.tensor([self.concentration1, self.concentration0], dtype=concentration1.dtype)
        log_beta_prior = prior.lgamma().sum() - prior.sum().lgamma()
        log_beta_post = (
            concentration1.lgamma()
            + concentration0.lgamma()
            - (concentration1 + concentration0).lgamma()
        )
        return log_beta_post - log_beta_prior.to(concentration1.device)
