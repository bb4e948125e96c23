"""Dirichlet–categorical draws (NumPyro twin of the Pyro family).

    π ~ Dirichlet(α 1_K),   y_n | π ~ Categorical(π)   (n = 1..N, no covariates).

With counts ``c_k = #{n : y_n = k}`` the posterior is ``Dirichlet(α + c)`` and the
evidence (the Dirichlet-multinomial likelihood of the ordered sequence) is

    log p(y) = log Γ(Kα) − log Γ(Kα + N) + Σ_k [log Γ(α + c_k) − log Γ(α)]

(Gelman et al. 2013, *Bayesian Data Analysis*, §3.4; Murphy 2012, §3.4).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import gammaln
from numpyro.distributions import constraints

from iai_prob.numpyro.models.base import LatentSite, check_positive, check_positive_int
from iai_prob.numpyro.models.generative import GenerativeTaskFamily, check_values

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
    def latent_sites(self):
        return (LatentSite("probs", (self.num_categories,), constraints.simplex),)

    def config(self) -> dict:
        return {"num_categories": self.num_categories, "concentration": self.concentration}

    def model(self, x=None, y=None):
        tasks, num_points = self._data_plates(x, y)
        prior = dist.Dirichlet(jnp.full(self.num_categories, self.concentration))
        with tasks:
            probs = numpyro.sample("probs", prior)
        with tasks, numpyro.plate(self.data_plate, num_points, dim=-1):
            return numpyro.sample("y", dist.Categorical(probs), obs=y)

    def _simulate(self, key, num_tasks, num_points):
        p_key, y_key = jax.random.split(key)
        alpha = jnp.full(self.num_categories, self.concentration)
        probs = jax.random.dirichlet(p_key, alpha, (num_tasks,))
        y = jax.random.categorical(y_key, jnp.log(probs)[:, None, :], shape=(num_tasks, num_points))
        return {"probs": probs}, self._no_covariates(num_tasks, num_points), y

    def _counts(self, x, y):
        """Category counts ``c`` of shape ``([T,] K)`` as floats."""
        y = self._observations(x, y)
        check_values(
            (y >= 0) & (y < self.num_categories) & (y == jnp.round(y)),
            f"DirichletCategorical(num_categories={self.num_categories}) expects integer "
            f"y in [0, {self.num_categories})",
        )
        one_hot = jax.nn.one_hot(y.astype(jnp.int32), self.num_categories)
        return one_hot.sum(-2)

    def exact_posterior(self, x, y):
        """``Dirichlet(α + c)`` over ``π``."""
        return dist.Dirichlet(self.concentration + self._counts(x, y))

    def log_evidence(self, x, y):
        counts = self._counts(x, y)
        num_points = jnp.shape(y)[-1]
        total = self.num_categories * self.concentration
        return (
            math.lgamma(total)
            - math.lgamma(total + num_points)
            + gammaln(self.concentration + counts).sum(-1)
            - self.num_categories * math.lgamma(self.concentration)
        )
