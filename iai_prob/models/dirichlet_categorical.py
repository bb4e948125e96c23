"""Dirichlet–categorical draws: the conjugate generative family on ``K`` categories.

    π ~ Dirichlet(α 1_K),   y_n | π ~ Categorical(π)   (n = 1..N, no covariates).

With counts ``c_k = #{n : y_n = k}`` the posterior is ``Dirichlet(α + c)`` and the
evidence (the Dirichlet-multinomial likelihood of the ordered sequence) is

    log p(y) = log Γ(Kα) − log Γ(Kα + N) + Σ_k [log Γ(α + c_k) − log Γ(α)]

(Gelman et al. 2013, *Bayesian Data Analysis*, §3.4; Murphy 2012, §3.4).
"""

from __future__ import annotations

import math

from iai_prob.models.base import LatentSite, check_positive, check_positive_int
from iai_prob.models.generative import GenerativeTaskFamily

__all__ = ["DirichletCategorical"]


class DirichletCategorical(GenerativeTaskFamily):
    """Draws ``y_n ∈ {0, …, K−1}`` from ``π ~ Dirichlet(concentration · 1_K)``.

    :param int num_categories: number of categories ``K``.
    :param float concentration: symmetric Dirichlet concentration ``α``.
    """

    name = "dirichlet_categorical"
    has_exact_posterior = True
    observation_shape = ()

    def __init__(self, num_categories: int = 4, concentration: float = 1.0):
        self.num_categories = check_positive_int("num_categories", num_categories)
        self.concentration = check_positive("concentration", concentration)

    @property
    def latent_sites(self) -> tuple[LatentSite, ...]:
        return (LatentSite("probs", (self.num_categories,), self.ppl.constraints.simplex),)

    def config(self) -> dict:
        return {"num_categories": self.num_categories, "concentration": self.concentration}

    def model(self, x=None, y=None):
        ppl = self.ppl
        tasks, num_points, like = self._data_plates(x, y)
        prior = ppl.dist.Dirichlet(ppl.full((self.num_categories,), self.concentration, like))
        with tasks:
            probs = ppl.sample("probs", prior)
        with tasks, ppl.plate(self.data_plate, num_points, dim=-1):
            return ppl.sample("y", ppl.dist.Categorical(probs), obs=y)

    def _simulate(self, draws, num_tasks, num_points):
        probs = draws.dirichlet(self.concentration, (num_tasks, self.num_categories))
        y = draws.categorical(probs, num_points)
        return {"probs": probs}, self.ppl.empty_covariates(num_tasks, num_points), y

    def _counts(self, x, y):
        """Category counts ``c`` of shape ``([T,] K)`` in the float dtype of the data."""
        y = self._observations(x, y)
        self.ppl.require(
            (y >= 0) & (y < self.num_categories) & (y == y.round()),
            f"DirichletCategorical(num_categories={self.num_categories}) expects integer "
            f"y in [0, {self.num_categories})",
        )
        return self.ppl.one_hot(y, self.num_categories, self.ppl.float_like(x, y)).sum(-2)

    def exact_posterior(self, x, y):
        """``Dirichlet(α + c)`` over ``π``."""
        return self.ppl.dist.Dirichlet(self.concentration + self._counts(x, y))

    def log_evidence(self, x, y):
        counts = self._counts(x, y)
        num_points = y.shape[-1]
        total = self.num_categories * self.concentration
        return (
            math.lgamma(total)
            - math.lgamma(total + num_points)
            + self.ppl.lgamma(self.concentration + counts).sum(-1)
            - self.num_categories * math.lgamma(self.concentration)
        )
