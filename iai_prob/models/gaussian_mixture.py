"""Gaussian mixture with unknown weights and means: a multimodal generative family.

    π ~ Dirichlet(α 1_K),   μ_k ~ N(0, s₀² I_d)   (k = 1..K),
    z_n | π ~ Categorical(π),   y_n | z_n, μ ~ N(μ_{z_n}, σ² I_d)   (n = 1..N).

The assignments ``z_n`` are local and discrete; the model marks them for
parallel enumeration, so ``pyro.infer.TraceEnum_ELBO(max_plate_nesting=2)``
sums them out exactly and a guide only covers the globals ``(π, μ)``. The
posterior over ``(π, μ)`` is not available in closed form: it is invariant to
the ``K!`` relabellings of the components (Bishop 2006, §9.2; Jasra, Holmes and
Stephens 2005, "Markov chain Monte Carlo methods and the label switching problem").
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch.distributions import constraints

from iai_prob.models.base import LatentSite, check_positive, check_positive_int
from iai_prob.models.generative import GenerativeTaskFamily

__all__ = ["GaussianMixture"]


class GaussianMixture(GenerativeTaskFamily):
    """``y_n ~ Σ_k π_k N(μ_k, noise_scale² I)`` with Dirichlet weights and Gaussian means.

    :param int dim: dimension ``d`` of each observation.
    :param int num_components: number of components ``K``.
    :param float prior_scale: prior standard deviation ``s₀`` of each mean coordinate.
    :param float noise_scale: within-component standard deviation ``σ``.
    :param float concentration: symmetric Dirichlet concentration ``α`` of the weights.
    """

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
    def observation_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    @property
    def latent_sites(self) -> tuple[LatentSite, ...]:
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

    def model(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        tasks, num_points, like = self._data_plates(x, y)
        num_components = self.num_components
        with tasks:
            weights = pyro.sample(
                "weights", dist.Dirichlet(like.new_full((num_components,), self.concentration))
            )
            locs = pyro.sample(
                "locs",
                dist.Normal(like.new_zeros(()), self.prior_scale)
                .expand([num_components, self.dim])
                .to_event(2),
            )
        with tasks, pyro.plate(self.data_plate, num_points, dim=-1):
            assignment = pyro.sample(
                "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
            )
            # Vindex broadcasts the batch dims of locs, (T, 1) or (), against the
            # assignment, whose shape is (T, N), (N,) or (K, 1, 1) when enumerated.
            loc = Vindex(locs)[..., assignment, :]
            return pyro.sample("y", dist.Normal(loc, self.noise_scale).to_event(1), obs=y)

    def _simulate(self, num_tasks, num_points, generator):
        alpha = torch.full((num_tasks, self.num_components), self.concentration)
        weights = torch._sample_dirichlet(alpha, generator=generator)
        locs = self.prior_scale * torch.randn(
            num_tasks, self.num_components, self.dim, generator=generator
        )
        assignment = torch.multinomial(weights, num_points, replacement=True, generator=generator)
        index = assignment.unsqueeze(-1).expand(num_tasks, num_points, self.dim)
        noise = self.noise_scale * torch.randn(num_tasks, num_points, self.dim, generator=generator)
        y = locs.gather(1, index) + noise
        return {"weights": weights, "locs": locs}, self._no_covariates(num_tasks, num_points), y
