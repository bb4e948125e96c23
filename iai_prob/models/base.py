"""The task-family protocol shared by every model in :mod:`iai_prob.models`.

A *task family* is a distribution over datasets. Each task ``T`` has global
latents ``θ ~ p(θ)`` (outside the data plate) and a dataset
``D = {(x_n, y_n)}_{n=1..N}`` with ``y_n ~ p(y | x_n, θ)`` (inside the plate
``"data"``). iai_prob learns ``q_φ(θ | D)`` across tasks, so every family
offers three views of the same generative process:

* :meth:`TaskFamily.model`: the Pyro model, for inference and for users;
* :meth:`TaskFamily.sample`: a fast vectorized simulator for meta-training;
* :meth:`TaskFamily.exact_posterior` / :meth:`TaskFamily.log_evidence`: closed
  forms where the family is conjugate, so that
  ``ELBO(q) = log p(D) − KL(q ‖ p(θ | D))`` measures the KL exactly.

Batches of tasks: every method accepts either one dataset, ``x`` of shape
``(N, ...)``, or a batch of datasets, ``x`` of shape ``(T, N, ...)``. In the
batched case the model wraps its globals in ``pyro.plate("tasks", T, dim=-2)``
so that the data plate keeps ``dim=-1`` in both cases and a global site of
event shape ``s`` has value shape ``(T, 1, *s)``.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
import math
from dataclasses import dataclass
from typing import ClassVar

import pyro
import torch
from torch.distributions import constraints

from iai_prob.checks import check_positive, check_positive_int

__all__ = [
    "DATA_PLATE",
    "TASKS_PLATE",
    "LatentSite",
    "TaskFamily",
    "check_positive",
    "check_positive_int",
    "linear_predictor",
]

DATA_PLATE = "data"
"""Name of the plate over the data points of a task."""
TASKS_PLATE = "tasks"
"""Name of the optional outer plate over a batch of tasks (``dim=-2``)."""


@dataclass(frozen=True)
class LatentSite:
    """A global latent site of a task family: its name, event shape and support."""

    name: str
    shape: tuple[int, ...]
    support: constraints.Constraint

    @property
    def numel(self) -> int:
        """Number of scalars in one value of the site (constrained space)."""
        return math.prod(self.shape)


def linear_predictor(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``x_nᵀ w`` per point: ``x`` ``(..., N, D)``, ``weights`` ``(..., 1, D)`` or ``(D,)``.

    ``weights`` carry a singleton data-plate dim inside the data plate; their leading dims
    (particles, tasks) broadcast against ``x``'s. Contracting with ``einsum`` lets the
    broadcast particles ride along as output columns of one batched matrix product,
    instead of materializing the ``(S, T, N, D)`` product of ``(x * w).sum(-1)`` (about
    13× faster forward and backward at S = 16, T = 1,024, N = 128, D = 8 on one thread).
    """
    dtype = torch.promote_types(x.dtype, weights.dtype)  # as ``x * w`` would
    x, weights = x.to(dtype), weights.to(dtype)
    if weights.dim() == 1:
        return x @ weights
    return torch.einsum("...nd,...kd->...nk", x, weights).squeeze(-1)


class TaskFamily(abc.ABC):
    """A distribution over tasks: Pyro model, vectorized simulator, exact references.

    Subclasses set :attr:`name`, implement :attr:`latent_sites`, :meth:`model`,
    :meth:`_simulate` and, where conjugate, :meth:`exact_posterior` and
    :meth:`log_evidence` (and set :attr:`has_exact_posterior`).
    """

    name: ClassVar[str]
    data_plate: ClassVar[str] = DATA_PLATE
    tasks_plate: ClassVar[str] = TASKS_PLATE
    has_exact_posterior: ClassVar[bool] = False

    # ------------------------------------------------------------------ layout
    @property
    @abc.abstractmethod
    def latent_sites(self) -> tuple[LatentSite, ...]:
        """Ordered global latent sites (the order of :meth:`flatten_latents`)."""

    @property
    def latent_dim(self) -> int:
        """Total number of scalars in the global latents (constrained space)."""
        return sum(site.numel for site in self.latent_sites)

    def flatten_latents(self, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate ``theta`` (values of shape ``(T, *shape)``) into ``(T, D)``."""
        parts = []
        for site in self.latent_sites:
            if site.name not in theta:
                raise ValueError(f"theta has no value for latent site {site.name!r}")
            value = theta[site.name]
            batch = value.shape[: value.dim() - len(site.shape)]
            parts.append(value.reshape(*batch, site.numel))
        return torch.cat(parts, dim=-1)

    def config(self) -> dict:
        """Constructor arguments, JSON-serializable (for checkpoint cards)."""
        return {}

    @classmethod
    def from_config(cls, config) -> TaskFamily:
        """Build the family from ``config``, a dict of constructor arguments (parsed JSON);
        an option it does not take, or a bad value, is one ``ValueError`` naming it."""
        if not isinstance(config, dict):
            raise ValueError(f"{cls.name}: the configuration must be an object, got {config!r}")
        parameters = inspect.signature(cls).parameters.values()
        if all(p.kind != p.VAR_KEYWORD for p in parameters):
            accepted = [
                p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ]
            unknown = sorted(set(config) - set(accepted))
            if unknown:
                raise ValueError(
                    f"{cls.name} takes no option {', '.join(map(repr, unknown))}; its options "
                    f"are {', '.join(accepted) or 'none'}"
                )
        try:
            return cls(**config)
        except TypeError as error:  # e.g. a null or a list where a number belongs
            raise ValueError(f"{cls.name}: bad configuration {config}: {error}") from None

    # ------------------------------------------------------------------- model
    @abc.abstractmethod
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The Pyro model ``p(θ) Π_n p(y_n | x_n, θ)``; returns the observations."""

    def plates(self, x: torch.Tensor, point_dims: int):
        """Return ``(tasks_context, num_points)`` for ``x`` with ``point_dims`` per-point dims.

        ``x`` of shape ``(N, *point)`` gives a null context; ``(T, N, *point)``
        gives ``pyro.plate("tasks", T, dim=-2)``.
        """
        if x.dim() == point_dims + 1:
            return contextlib.nullcontext(), x.shape[0]
        if x.dim() == point_dims + 2:
            return pyro.plate(self.tasks_plate, x.shape[0], dim=-2), x.shape[1]
        raise ValueError(
            f"{type(self).__name__}: expected x with {point_dims + 1} dims (N, ...) "
            f"or {point_dims + 2} dims (T, N, ...), got shape {tuple(x.shape)}"
        )

    # --------------------------------------------------------------- simulate
    def sample(
        self,
        num_tasks: int,
        num_points: int,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Simulate ``num_tasks`` tasks of ``num_points`` points each.

        Returns ``(theta, x, y)`` with ``theta[name]`` of shape ``(T, *shape)``,
        ``x`` of shape ``(T, N, ...)`` and ``y`` of shape ``(T, N, ...)``.
        """
        num_tasks = check_positive_int("num_tasks", num_tasks)
        num_points = check_positive_int("num_points", num_points)
        return self._simulate(num_tasks, num_points, generator)

    @abc.abstractmethod
    def _simulate(
        self, num_tasks: int, num_points: int, generator: torch.Generator | None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Vectorized simulator behind :meth:`sample` (arguments already checked)."""

    # -------------------------------------------------------- exact references
    def exact_posterior(self, x: torch.Tensor, y: torch.Tensor):
        """The exact posterior over the flattened latents (conjugate families only)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form posterior")

    def log_evidence(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p(y | x)`` in closed form (conjugate families only)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form evidence")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"
