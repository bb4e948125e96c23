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
        constraints = self.ppl.constraints
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

    def model(self, x=None, y=None):
        ppl = self.ppl
        tasks, num_points, like = self._data_plates(x, y)
        num_components = self.num_components
        with tasks:
            concentration = ppl.full((num_components,), self.concentration, like)
            weights = ppl.sample("weights", ppl.dist.Dirichlet(concentration))
            prior = ppl.dist.Normal(ppl.constant(0.0, like), self.prior_scale)
            locs = ppl.sample("locs", prior.expand([num_components, self.dim]).to_event(2))
        with tasks, ppl.plate(self.data_plate, num_points, dim=-1):
            assignment = ppl.sample(
                "assignment", ppl.dist.Categorical(weights), infer={"enumerate": "parallel"}
            )
            # Vindex broadcasts the batch dims of locs, (T, 1) or (), against the
            # assignment, whose shape is (T, N), (N,) or (K, 1, 1) when enumerated.
            loc = ppl.Vindex(locs)[..., assignment, :]
            return ppl.sample("y", ppl.dist.Normal(loc, self.noise_scale).to_event(1), obs=y)

    def _simulate(self, draws, num_tasks, num_points):
        weights = draws.dirichlet(self.concentration, (num_tasks, self.num_components))
        locs = self.prior_scale * draws.normal((num_tasks, self.num_components, self.dim))
        assignment = draws.categorical(weights, num_points)
        tasks = self.ppl.arange(num_tasks)[:, None]
        noise = self.noise_scale * draws.normal((num_tasks, num_points, self.dim))
        y = locs[tasks, assignment] + noise
        return (
            {"weights": weights, "locs": locs},
            self.ppl.empty_covariates(num_tasks, num_points),
            y,
        )
