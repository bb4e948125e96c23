"""Beta–Bernoulli coin flips: the simplest conjugate generative family.

    p ~ Beta(α, β),   y_n | p ~ Bernoulli(p)   (n = 1..N, no covariates).

With ``k = Σ_n y_n`` heads the posterior is ``Beta(α + k, β + N − k)`` and the
evidence is ``log p(y) = log B(α + k, β + N − k) − log B(α, β)`` with ``B`` the
beta function (Gelman et al. 2013, *Bayesian Data Analysis*, §2.4).
"""

from __future__ import annotations

import math

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
        return (LatentSite("probs", (), self.ppl.constraints.unit_interval),)

    def config(self) -> dict:
        return {"concentration1": self.concentration1, "concentration0": self.concentration0}

    def model(self, x=None, y=None):
        ppl = self.ppl
        tasks, num_points, like = self._data_plates(x, y)
        with tasks:
            prior = ppl.dist.Beta(
                ppl.constant(self.concentration1, like), ppl.constant(self.concentration0, like)
            )
            probs = ppl.sample("probs", prior)
        with tasks, ppl.plate(self.data_plate, num_points, dim=-1):
            return ppl.sample("y", ppl.dist.Bernoulli(probs), obs=y)

    def _simulate(self, draws, num_tasks, num_points):
        probs = draws.beta(self.concentration1, self.concentration0, (num_tasks,))
        y = draws.bernoulli(probs[:, None], (num_tasks, num_points))
        return {"probs": probs}, self.ppl.empty_covariates(num_tasks, num_points), y

    def _posterior_params(self, x, y):
        y = self._observations(x, y)
        self.ppl.require((y == 0) | (y == 1), "BetaBernoulli expects y with values in {0, 1}")
        ones = self.ppl.as_float(y, self.ppl.float_like(x, y)).sum(-1)
        return self.concentration1 + ones, self.concentration0 + y.shape[-1] - ones

    def exact_posterior(self, x, y):
        """``Beta(α + k, β + N − k)`` over ``p``, as a distribution of event shape ``(1,)``."""
        concentration1, concentration0 = self._posterior_params(x, y)
        posterior = self.ppl.dist.Beta(concentration1[..., None], concentration0[..., None])
        return posterior.to_event(1)

    def log_evidence(self, x, y):
        concentration1, concentration0 = self._posterior_params(x, y)
        lgamma = self.ppl.lgamma
        log_beta_posterior = (
            lgamma(concentration1)
            + lgamma(concentration0)
            - lgamma(concentration1 + concentration0)
        )
        log_beta_prior = (
            math.lgamma(self.concentration1)
            + math.lgamma(self.concentration0)
            - math.lgamma(self.concentration1 + self.concentration0)
        )
        return log_beta_posterior - log_beta_prior
