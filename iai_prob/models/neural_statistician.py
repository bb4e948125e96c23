"""Neural-statistician-style generative model: the explicit regime for generative tasks.

    z ~ N(0, I_{d_z}),
    y_n | z ~ Σ_m π_{γ,m}(z) Π_j p(y_nj | θ_{γ,mj}(z))           (n = 1..N),

a mixture of ``M`` product densities (diagonal Gaussians, or Bernoullis for binary
data) whose weights and parameters are decoded from the task latent ``z`` by an MLP
``f_γ``. A task is a set of exchangeable points; ``q(z | D)`` summarizes it and the
decoder generates new points of the same task (Edwards & Storkey, "Towards a Neural
Statistician", ICLR 2017; here with the iterative amortized guide as the statistic
network and a mixture decoder instead of per-point latents, so the likelihood is exact
and ``pyro.infer.Trace_ELBO`` needs no local guide).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from iai_prob.models.base import check_positive_int
from iai_prob.models.explicit import ExplicitTaskFamily
from iai_prob.models.generative import GenerativeTaskFamily

__all__ = ["OBSERVATIONS", "NeuralStatistician"]

OBSERVATIONS = ("gaussian", "bernoulli")
"""Observation models of the neural statistician's decoder."""


class NeuralStatistician(ExplicitTaskFamily, GenerativeTaskFamily):
    """A learned density ``p_γ(y | z)`` over the points of a task with latent ``z``.

    :param GenerativeTaskFamily data_family: the tasks (observations ``([T,] N, *shape)``).
    :param int latent_dim: ``d_z``.
    :param int hidden: width of the decoder's two hidden layers.
    :param int num_components: mixture components ``M``.
    :param str observation: ``"gaussian"`` (real data) or ``"bernoulli"`` (binary data).
    """

    name = "neural_statistician"

    def __init__(
        self,
        data_family: GenerativeTaskFamily,
        *,
        latent_dim: int = 4,
        hidden: int = 64,
        num_components: int = 4,
        observation: str = "gaussian",
    ):
        super().__init__(data_family, latent_dim=latent_dim)
        if not isinstance(data_family, GenerativeTaskFamily):
            raise ValueError(f"data_family must be a GenerativeTaskFamily, got {data_family!r}")
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got {observation!r}")
        self.hidden = check_positive_int("hidden", hidden)
        self.num_components = check_positive_int("num_components", num_components)
        self.observation = observation
        self.obs_dim = math.prod(data_family.observation_shape)
        per_component = 1 + self.obs_dim * (2 if observation == "gaussian" else 1)
        self.decoder = self._make_decoder(
            [self.z_dim, self.hidden, self.hidden, self.num_components * per_component]
        )

    @property
    def observation_shape(self) -> tuple[int, ...]:
        return tuple(self.data_family.observation_shape)

    def config(self) -> dict:
        return {
            **self._base_config(),
            "hidden": self.hidden,
            "num_components": self.num_components,
            "observation": self.observation,
        }

    def density(self, z: torch.Tensor):
        """``p_γ(y | z)`` with batch shape ``z.shape[:-1]`` and event ``(obs_dim,)``."""
        out = self.decoder(z)
        m, d = self.num_components, self.obs_dim
        logits = out[..., :m]
        params = out[..., m:].unflatten(-1, (m, -1))
        if self.observation == "gaussian":
            loc, log_scale = params[..., :d], params[..., d:]
            components = dist.Normal(loc, log_scale.clamp(-7, 5).exp()).to_event(1)
        else:
            components = dist.Bernoulli(logits=params).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)

    def model(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        tasks, num_points, like = self._data_plates(x, y)
        z = self._sample_latent(like, tasks)
        flat = None
        if y is not None:
            flat = y.reshape(*y.shape[: y.dim() - len(self.observation_shape)], -1)
        with tasks, pyro.plate(self.data_plate, num_points, dim=-1):
            return pyro.sample("y", self.density(z), obs=flat)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, num_points: int) -> torch.Tensor:
        """``num_points`` new points per latent ``z`` ``(..., d_z)``: ``(..., N, *shape)``."""
        draws = self.density(z).sample((num_points,)).movedim(0, -2)
        return draws.reshape(*draws.shape[:-1], *self.observation_shape)
