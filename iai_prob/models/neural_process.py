"""Latent neural process: the explicit regime for predictive (supervised) task families.

    z ~ N(0, I_{d_z}),
    y_n | x_n, z ~ N(f_γ(x_n, z), σ_γ²)                    (likelihood="gaussian"),
    y_n | x_n, z ~ Bernoulli(logits = f_γ(x_n, z))           (likelihood="bernoulli"),
    y_n | x_n, z ~ Categorical(logits = f_γ(x_n, z) ∈ ℝ^C)   (likelihood="categorical"),

with ``f_γ`` an MLP on ``[x_n, z]`` (Garnelo et al. 2018, "Neural Processes": the
latent-variable NP; here the encoder is the iterative amortized guide over ``z`` and
the decoder is trained jointly with it on the ELBO, Mittal et al. 2025 §2, explicit
regime). ``σ_γ = exp(s_γ)`` is a learned scalar.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from iai_prob.models.base import TaskFamily, check_positive_int
from iai_prob.models.explicit import ExplicitTaskFamily, broadcast_concat

__all__ = ["LIKELIHOODS", "LatentNeuralProcess"]

LIKELIHOODS = ("gaussian", "bernoulli", "categorical")
"""Likelihoods of the latent neural process's decoder."""


class LatentNeuralProcess(ExplicitTaskFamily):
    """A learned conditional likelihood ``p_γ(y | x, z)`` over a task latent ``z``.

    :param TaskFamily data_family: the tasks (``x`` of shape ``([T,] N, d)``).
    :param int latent_dim: ``d_z``.
    :param int hidden: width of the decoder's two hidden layers.
    :param str likelihood: ``"gaussian"``, ``"bernoulli"`` or ``"categorical"``.
    :param int num_classes: ``C`` for ``"categorical"``.
    """

    name = "latent_neural_process"

    def __init__(
        self,
        data_family: TaskFamily,
        *,
        latent_dim: int = 4,
        hidden: int = 32,
        likelihood: str = "gaussian",
        num_classes: int = 2,
    ):
        super().__init__(data_family, latent_dim=latent_dim)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.hidden = check_positive_int("hidden", hidden)
        self.likelihood = likelihood
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.input_dim = int(
            data_family.sample(1, 1, generator=torch.Generator().manual_seed(0))[1].shape[-1]
        )
        outputs = self.num_classes if likelihood == "categorical" else 1
        self.decoder = self._make_decoder(
            [self.input_dim + self.z_dim, self.hidden, self.hidden, outputs], num_extra=1
        )

    def config(self) -> dict:
        return {
            **self._base_config(),
            "hidden": self.hidden,
            "likelihood": self.likelihood,
            "num_classes": self.num_classes,
        }

    def predictive(self, x: torch.Tensor, z: torch.Tensor):
        """``p_γ(y | x, z)`` as a torch distribution; ``z`` broadcasts against ``x``'s points.

        ``x``: ``([T,] N, d)``; ``z``: ``(d_z,)`` or ``(..., T, 1, d_z)`` (the model's
        site value); batch shape ``(..., [T,] N)``.
        """
        if x.shape[-1] != self.input_dim:
            raise ValueError(
                f"LatentNeuralProcess was built for x with {self.input_dim} features, got "
                f"shape {tuple(x.shape)}"
            )
        out = self.decoder(broadcast_concat(x, z))
        if self.likelihood == "gaussian":
            return dist.Normal(out.squeeze(-1), self.decoder.extra[0].clamp(-7, 5).exp())
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out.squeeze(-1))
        return dist.Categorical(logits=out)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        tasks, num_points = self.plates(x, point_dims=1)
        z = self._sample_latent(x, tasks)
        with tasks, pyro.plate(self.data_plate, num_points, dim=-1):
            return pyro.sample("y", self.predictive(x, z), obs=y)
