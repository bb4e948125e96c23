"""Gaussian mixture with unknown weights and means (NumPyro twin of the Pyro family).

    π ~ Dirichlet(α 1_K),   μ_k ~ N(0, s₀² I_d),
    z_n | π ~ Categorical(π),   y_n | z_n, μ ~ N(μ_{z_n}, σ² I_d).

The assignments are local, discrete and marked for parallel enumeration, so
``numpyro.infer.TraceEnum_ELBO`` (with funsor) sums them out and a guide covers only
the globals ``(π, μ)``. Without covariates, ``x`` is a zero-width ``([T,] N, 0)`` array.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.ops.indexing import Vindex

from iai_prob.numpyro.models.base import LatentSite, check_positive, check_positive_int
from iai_prob.numpyro.models.generative import GenerativeTaskFamily

__all__ = ["GaussianMixture"]


class GaussianMixture(GenerativeTaskFamily):
    """``y_n ~ Σ_k π_k N(μ_k, noise_scale² I)`` with Dirichlet weights, Gaussian means."""

    name = "gaussian_mixture"

    def __init__(
        self,
        dim: int = 2,
        num_components: int = 3,
        prior_scale: float = 3.0,
        noise_scale: float = 0.5,
        concentration: float = 2.0,
    ):
        self.dim = check_positive_int("dim", dim)
        self.num_components = check_positive_int("num_components", num_components)
        self.prior_scale = check_positive("prior_scale", prior_scale)
        self.noise_scale = check_positive("noise_scale", noise_scale)
        self.concentration = check_positive("concentration", concentration)

    @property
    def latent_sites(self):
        return (
            LatentSite("weights", (self.num_components,), constraints.simplex),
            LatentSite("locs", (self.num_components, self.dim), constraints.real),
        )

    def config(self) -> dict:
        return {
            "dim": self.dim,
            "num_components": self.num_components,
            "prior_scale": self.prior_scale,
            "noise_scale": self.noise_scale,
            "concentration": self.concentration,
        }

    @property
    def observation_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def model(self, x=None, y=None):
        tasks, num_points = self._data_plates(x, y)
        k = self.num_components
        with tasks:
            weights = numpyro.sample("weights", dist.Dirichlet(jnp.full(k, self.concentration)))
            locs = numpyro.sample(
                "locs", dist.Normal(0.0, self.prior_scale).expand([k, self.dim]).to_event(2)
            )
        with tasks, numpyro.plate(self.data_plate, num_points, dim=-1):
            assignment = numpyro.sample(
                "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
            )
            loc = Vindex(locs)[..., assignment, :]
            return numpyro.sample("y", dist.Normal(loc, self.noise_scale).to_event(1), obs=y)

    def _simulate(self, key, num_tasks, num_points):
        w_key, l_key, a_key, n_key = jax.random.split(key, 4)
        weights = jax.random.dirichlet(
            w_key, jnp.full(self.num_components, self.concentration), (num_tasks,)
        )
        locs = self.prior_scale * jax.random.normal(
            l_key, (num_tasks, self.num_components, self.dim)
        )
        assignment = jax.random.categorical(
            a_key, jnp.log(weights)[:, None, :], shape=(num_tasks, num_points)
        )
        chosen = jnp.take_along_axis(locs, assignment[..., None], axis=1)
        y = chosen + self.noise_scale * jax.random.normal(n_key, chosen.shape)
        return {"weights": weights, "locs": locs}, self._no_covariates(num_tasks, num_points), y
