"""Beta–Bernoulli coin flips (NumPyro twin of the Pyro family).

    p ~ Beta(α, β),   y_n | p ~ Bernoulli(p)   (n = 1..N, no covariates).

With ``k = Σ_n y_n`` heads the posterior is ``Beta(α + k, β + N − k)`` and the
evidence is ``log p(y) = log B(α + k, β + N − k) − log B(α, β)`` with ``B`` the
beta function (Gelman et al. 2013, *Bayesian Data Analysis*, §2.4).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import betaln
from numpyro.distributions import constraints

from iai_prob.numpyro.models.base import LatentSite, check_positive
from iai_prob.numpyro.models.generative import GenerativeTaskFamily, check_values

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
    def latent_sites(self):
        return (LatentSite("probs", (), constraints.unit_interval),)

    def config(self) -> dict:
        return {"concentration1": self.concentration1, "concentration0": self.concentration0}

    def model(self, x=None, y=None):
        tasks, num_points = self._data_plates(x, y)
        with tasks:
            probs = numpyro.sample("probs", dist.Beta(self.concentration1, self.concentration0))
        with tasks, numpyro.plate(self.data_plate, num_points, dim=-1):
            return numpyro.sample("y", dist.Bernoulli(probs), obs=y)

    def _simulate(self, key, num_tasks, num_points):
        p_key, y_key = jax.random.split(key)
        probs = jax.random.beta(p_key, self.concentration1, self.concentration0, (num_tasks,))
        y = jax.random.bernoulli(y_key, probs[:, None], (num_tasks, num_points))
        y = y.astype(jnp.result_type(float))
        return {"probs": probs}, self._no_covariates(num_tasks, num_points), y

    def _posterior_params(self, x, y):
        y = self._observations(x, y)
        check_values((y == 0) | (y == 1), "BetaBernoulli expects y with values in {0, 1}")
        ones = y.astype(jnp.result_type(float)).sum(-1)
        return self.concentration1 + ones, self.concentration0 + y.shape[-1] - ones

    def exact_posterior(self, x, y):
        """``Beta(α + k, β + N − k)`` over ``p``, as a distribution of event shape ``(1,)``."""
        concentration1, concentration0 = self._posterior_params(x, y)
        return dist.Beta(concentration1[..., None], concentration0[..., None]).to_event(1)

    def log_evidence(self, x, y):
        concentration1, concentration0 = self._posterior_params(x, y)
        return betaln(concentration1, concentration0) - betaln(
            self.concentration1, self.concentration0
        )
