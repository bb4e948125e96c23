"""The task-family protocol of the NumPyro port (twin of :mod:`iai_prob.models.base`).

A task family is a distribution over datasets: global latents ``θ ~ p(θ)`` outside the
plate ``"data"`` and observations ``y_n ~ p(y | x_n, θ)`` inside it. Each family offers
the NumPyro model (same site and plate names as the Pyro model, so one checkpoint
serves both), a vectorized JAX simulator for meta-training and, where conjugate, the
exact posterior and evidence. A batch of datasets ``x`` of shape ``(T, N, …)`` puts the
globals in ``numpyro.plate("tasks", T, dim=-2)``, the data plate keeping ``dim=-1``.
"""

from __future__ import annotations

import abc
import contextlib
import math
from dataclasses import dataclass
from typing import ClassVar

import jax.numpy as jnp
import numpyro

from iai_prob.checks import check_positive, check_positive_int

__all__ = [
    "DATA_PLATE",
    "TASKS_PLATE",
    "LatentSite",
    "TaskFamily",
    "check_positive",
    "check_positive_int",
]

DATA_PLATE = "data"
"""Name of the plate over the data points of a task."""
TASKS_PLATE = "tasks"
"""Name of the optional outer plate over a batch of tasks (``dim=-2``)."""


@dataclass(frozen=True)
class LatentSite:
    """A global latent site: its name, event shape and support."""

    name: str
    shape: tuple[int, ...]
    support: object

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class TaskFamily(abc.ABC):
    """A distribution over tasks: NumPyro model, JAX simulator, exact references."""

    name: ClassVar[str]
    data_plate: ClassVar[str] = DATA_PLATE
    tasks_plate: ClassVar[str] = TASKS_PLATE
    has_exact_posterior: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def latent_sites(self) -> tuple[LatentSite, ...]:
        """Ordered global latent sites."""

    @property
    def latent_dim(self) -> int:
        return sum(site.numel for site in self.latent_sites)

    def flatten_latents(self, theta: dict):
        """Concatenate ``theta`` (values of shape ``(T, *shape)``) into ``(T, D)``."""
        parts = []
        for site in self.latent_sites:
            if site.name not in theta:
                raise ValueError(f"theta has no value for latent site {site.name!r}")
            value = jnp.asarray(theta[site.name])
            batch = value.shape[: value.ndim - len(site.shape)]
            parts.append(value.reshape(*batch, site.numel))
        return jnp.concatenate(parts, axis=-1)

    def config(self) -> dict:
        """Constructor arguments, JSON-serializable (for checkpoint cards)."""
        return {}

    @abc.abstractmethod
    def model(self, x, y=None):
        """The NumPyro model ``p(θ) Π_n p(y_n | x_n, θ)``; returns the observations."""

    def plates(self, x, point_dims: int):
        """``(tasks_context, num_points)`` for ``x`` with ``point_dims`` per-point dims."""
        if x.ndim == point_dims + 1:
            return contextlib.nullcontext(), x.shape[0]
        if x.ndim == point_dims + 2:
            return numpyro.plate(self.tasks_plate, x.shape[0], dim=-2), x.shape[1]
        raise ValueError(
            f"{type(self).__name__}: expected x with {point_dims + 1} dims (N, ...) "
            f"or {point_dims + 2} dims (T, N, ...), got shape {tuple(x.shape)}"
        )

    def sample(self, key, num_tasks: int, num_points: int):
        """Simulate ``(theta, x, y)`` for ``num_tasks`` tasks of ``num_points`` points."""
        num_tasks = check_positive_int("num_tasks", num_tasks)
        num_points = check_positive_int("num_points", num_points)
        return self._simulate(key, num_tasks, num_points)

    @abc.abstractmethod
    def _simulate(self, key, num_tasks: int, num_points: int):
        """Vectorized simulator behind :meth:`sample` (arguments already checked)."""

    def exact_posterior(self, x, y):
        raise NotImplementedError(f"{type(self).__name__} has no closed-form posterior")

    def log_evidence(self, x, y):
        raise NotImplementedError(f"{type(self).__name__} has no closed-form evidence")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"
