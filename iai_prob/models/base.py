"""The task-family protocol shared by every model in :mod:`iai_prob.models`.

A *task family* is a distribution over datasets. Each task ``T`` has global
latents ``θ ~ p(θ)`` (outside the data plate) and a dataset
``D = {(x_n, y_n)}_{n=1..N}`` with ``y_n ~ p(y | x_n, θ)`` (inside the plate
``"data"``). iai_prob learns ``q_φ(θ | D)`` across tasks, so every family
offers three views of the same generative process:

* :meth:`TaskFamily.model`: the Pyro (or NumPyro) model, for inference and for users;
* :meth:`TaskFamily.sample`: a fast vectorized simulator for meta-training;
* :meth:`TaskFamily.exact_posterior` / :meth:`TaskFamily.log_evidence`: closed
  forms where the family is conjugate, so that
  ``ELBO(q) = log p(D) − KL(q ‖ p(θ | D))`` measures the KL exactly.

Batches of tasks: every method accepts either one dataset, ``x`` of shape
``(N, ...)``, or a batch of datasets, ``x`` of shape ``(T, N, ...)``. In the
batched case the model wraps its globals in ``pyro.plate("tasks", T, dim=-2)``
so that the data plate keeps ``dim=-1`` in both cases and a global site of
event shape ``s`` has value shape ``(T, 1, *s)``.

Two backends, one definition: a family is written once against its backend object
``self.ppl`` (:mod:`iai_prob.models.backend`) and runs under Pyro (the default) or,
bound with :meth:`TaskFamily.on` ``("numpyro")``, under NumPyro with JAX arrays and a
JAX PRNG key. The same site and plate names in both, so one checkpoint serves both.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import inspect
import math
from dataclasses import dataclass
from typing import ClassVar

from iai_prob.checks import check_positive, check_positive_int
from iai_prob.models.backend import BACKENDS, get_backend

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
    """A global latent site of a task family: its name, event shape and support (a
    constraint of the family's backend: ``torch.distributions.constraints`` or
    ``numpyro.distributions.constraints``)."""

    name: str
    shape: tuple[int, ...]
    support: object

    @property
    def numel(self) -> int:
        """Number of scalars in one value of the site (constrained space)."""
        return math.prod(self.shape)


class TaskFamily(abc.ABC):
    """A distribution over tasks: model, vectorized simulator, exact references.

    Subclasses set :attr:`name`, implement :attr:`latent_sites`, :meth:`model`,
    :meth:`_simulate` and, where conjugate, :meth:`exact_posterior` and
    :meth:`log_evidence` (and set :attr:`has_exact_posterior`), each once, through the
    backend object :attr:`ppl`.
    """

    name: ClassVar[str]
    data_plate: ClassVar[str] = DATA_PLATE
    tasks_plate: ClassVar[str] = TASKS_PLATE
    has_exact_posterior: ClassVar[bool] = False
    backend: str = "pyro"
    """The backend the family runs under: ``"pyro"`` (default) or ``"numpyro"``."""

    # ---------------------------------------------------------------- backend
    @property
    def ppl(self):
        """The backend object (:func:`~iai_prob.models.backend.get_backend`)."""
        return get_backend(self.backend)

    def on(self, backend: str) -> TaskFamily:
        """The same family (same configuration) under ``backend``: ``"pyro"`` takes
        PyTorch arrays and ``torch.Generator`` draws, ``"numpyro"`` JAX arrays and keys."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; known: {sorted(BACKENDS)}")
        if backend == self.backend:
            return self
        bound = copy.copy(self)
        bound.backend = backend
        return bound

    # ------------------------------------------------------------------ layout
    @property
    @abc.abstractmethod
    def latent_sites(self) -> tuple[LatentSite, ...]:
        """Ordered global latent sites (the order of :meth:`flatten_latents`)."""

    @property
    def latent_dim(self) -> int:
        """Total number of scalars in the global latents (constrained space)."""
        return sum(site.numel for site in self.latent_sites)

    def flatten_latents(self, theta: dict):
        """Concatenate ``theta`` (values of shape ``(T, *shape)``) into ``(T, D)``."""
        parts = []
        for site in self.latent_sites:
            if site.name not in theta:
                raise ValueError(f"theta has no value for latent site {site.name!r}")
            value = self.ppl.asarray(theta[site.name])
            batch = value.shape[: value.ndim - len(site.shape)]
            parts.append(value.reshape(*batch, site.numel))
        return self.ppl.concatenate(parts, axis=-1)

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
    def model(self, x, y=None):
        """The model ``p(θ) Π_n p(y_n | x_n, θ)`` under :attr:`backend`; returns the
        observations."""

    def plates(self, x, point_dims: int):
        """Return ``(tasks_context, num_points)`` for ``x`` with ``point_dims`` per-point dims.

        ``x`` of shape ``(N, *point)`` gives a null context; ``(T, N, *point)``
        gives the backend's ``plate("tasks", T, dim=-2)``.
        """
        if x.ndim == point_dims + 1:
            return contextlib.nullcontext(), x.shape[0]
        if x.ndim == point_dims + 2:
            return self.ppl.plate(self.tasks_plate, x.shape[0], dim=-2), x.shape[1]
        raise ValueError(
            f"{type(self).__name__}: expected x with {point_dims + 1} dims (N, ...) "
            f"or {point_dims + 2} dims (T, N, ...), got shape {tuple(x.shape)}"
        )

    # --------------------------------------------------------------- simulate
    def sample(self, *args, **kwargs):
        """Simulate ``num_tasks`` tasks of ``num_points`` points each.

        Pyro: ``sample(num_tasks, num_points, *, generator=None)`` (a ``torch.Generator``;
        ``None`` draws from torch's global one). NumPyro: ``sample(key, num_tasks,
        num_points)`` with a JAX PRNG key (it runs inside ``jax.jit``).

        Returns ``(theta, x, y)`` with ``theta[name]`` of shape ``(T, *shape)``,
        ``x`` of shape ``(T, N, ...)`` and ``y`` of shape ``(T, N, ...)``.
        """
        draws, num_tasks, num_points = self.ppl.simulation_arguments(*args, **kwargs)
        num_tasks = check_positive_int("num_tasks", num_tasks)
        num_points = check_positive_int("num_points", num_points)
        return self._simulate(draws, num_tasks, num_points)

    @abc.abstractmethod
    def _simulate(self, draws, num_tasks: int, num_points: int):
        """Vectorized simulator behind :meth:`sample` (arguments already checked);
        ``draws`` is the backend's random draws (``normal``, ``gamma``, …)."""

    # -------------------------------------------------------- exact references
    def exact_posterior(self, x, y):
        """The exact posterior over the flattened latents (conjugate families only)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form posterior")

    def log_evidence(self, x, y):
        """``log p(y | x)`` in closed form (conjugate families only)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form evidence")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"
