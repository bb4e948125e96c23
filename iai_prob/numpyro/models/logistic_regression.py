"""Bayesian logistic regression (NumPyro twin of the Pyro family).

    w ~ N(0, s₀² I_d),   x_n ~ N(0, I_d),   y_n | x_n, w ~ Bernoulli(σ(x_nᵀ w)).

Not conjugate (Bishop 2006, §4.5); NUTS or importance sampling serve as references.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from iai_prob.numpyro.models.base import LatentSite, TaskFamily, check_positive, check_positive_int
from iai_prob.numpyro.models.bernoulli_logits import BernoulliLogits

__all__ = ["LogisticRegression"]


class LogisticRegression(TaskFamily):
    """``y ~ Bernoulli(logits=xᵀw)`` with ``w ~ N(0, prior_scale² I)``."""

    name = "logistic_regression"

    def __init__(self, dim: int = 8, prior_scale: float = 1.0):
        self.dim = check_positive_int("dim", dim)
        self.prior_scale = check_positive("prior_scale", prior_scale)

    @property
    def latent_sites(self):
        return (LatentSite("w", (self.dim,), constraints.real),)

    def config(self) -> dict:
        return {"dim": self.dim, "prior_scale": self.prior_scale}

    def model(self, x, y=None):
        tasks, num_points = self.plates(x, point_dims=1)
        with tasks:
            w = numpyro.sample(
                "w", dist.Normal(0.0, self.prior_scale).expand([self.dim]).to_event(1)
            )
        with tasks, numpyro.plate(self.data_plate, num_points, dim=-1):
            return numpyro.sample("y", BernoulliLogits((x * w).sum(-1)), obs=y)

    def _simulate(self, key, num_tasks, num_points):
        w_key, x_key, y_key = jax.random.split(key, 3)
        w = self.prior_scale * jax.random.normal(w_key, (num_tasks, self.dim))
        x = jax.random.normal(x_key, (num_tasks, num_points, self.dim))
        probs = jax.nn.sigmoid(jnp.einsum("tnd,td->tn", x, w))
        y = jax.random.bernoulli(y_key, probs).astype(jnp.result_type(float))
        return {"w": w}, x, y
