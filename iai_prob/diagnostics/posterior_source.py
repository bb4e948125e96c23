"""What every diagnostic reads from an approximate posterior, whichever its backend.

:class:`PosteriorSource` is the interface:
:class:`~iai_prob.diagnostics.adapter.ApproximatePosterior` (Pyro) and
:class:`~iai_prob.diagnostics.numpyro_adapter.NumPyroPosterior` (NumPyro) provide it,
:func:`~iai_prob.diagnostics.adapter.approximate_posterior` picks one, and the
diagnostics read posteriors through it alone; the two adapters share this module, not
each other. The arrays are the backend's (``torch.Tensor`` or JAX arrays, convertible
with ``numpy.asarray``), sample-first: ``(S, T, …)``. :class:`PosteriorAdapter` (the
methods that read no array) and the helpers below are shared by both adapters; none
imports a framework.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple, Protocol

__all__ = [
    "NamedArray",
    "PosteriorAdapter",
    "PosteriorDraws",
    "PosteriorSource",
    "check_num_draws",
    "checked_distribution",
    "event_dims",
    "named_constants",
    "tasks_plate_name",
]


class NamedArray(NamedTuple):
    """A value and the names of its dims (the model's plate names, else ``site_dim_i``)."""

    value: object
    dims: tuple[str, ...]


class PosteriorDraws(NamedTuple):
    """Draws of ``q`` for ``T`` tasks, sample-first.

    :ivar z: unconstrained joint latents ``(S, T, D)``.
    :ivar values: constrained value of each global site, ``(S, T, *event_shape)``.
    :ivar log_q: ``log q(z)``, ``(S, T)``.
    :ivar log_joint: ``log p(z, D)`` in unconstrained space (Jacobian included), ``(S, T)``.
    """

    z: object
    values: dict[str, object]
    log_q: object
    log_joint: object

    @property
    def log_weights(self):
        """Log importance weights ``log p(z, D) − log q(z)``, ``(S, T)``."""
        return self.log_joint - self.log_q


class PosteriorSource(Protocol):
    """What the diagnostics read from an approximate posterior (PyTorch or NumPyro).

    Besides the methods: ``layout`` (site names, event shapes, bijections),
    ``distribution`` (``sample``, ``mean``, ``variance`` over ``z``; read by :func:`sbc`),
    ``task.data`` (``args``, ``kwargs``, ``num_points``; read by the NUTS comparison and the
    report) and ``model`` (run by Pyro NUTS when no NumPyro twin is given).
    """

    layout: object
    distribution: object
    task: object
    model: object

    @property
    def num_tasks(self) -> int: ...

    @property
    def batched(self) -> bool: ...

    @property
    def num_points(self) -> int: ...

    def sample_latent(self, num_samples: int, *, seed: int = 0): ...

    def moments(self): ...

    def draw(self, num_samples: int, *, seed: int = 0) -> PosteriorDraws: ...

    def site_dims(self) -> dict[str, tuple[str, ...]]: ...

    def pointwise_log_likelihood(self, z) -> dict[str, NamedArray]: ...

    def posterior_predictive(self, z, *, seed: int = 0) -> dict[str, NamedArray]: ...

    def observed(self) -> dict[str, NamedArray]: ...

    def constant(self) -> dict[str, NamedArray]: ...


class PosteriorAdapter:
    """What both adapters implement alike: the dims of the sites' values, the name of the
    tasks' plate and the model's constant data. A subclass has the attributes and
    properties of :class:`PosteriorSource` and four hooks: ``_trace_sites()`` (the site
    dicts of its model's trace on the user's data), ``_user_arguments()`` (that data's
    ``(args, kwargs)``), ``_observed_ids()`` (the ``id`` of every observed value in it)
    and ``_is_array(value)`` (an array of its backend)."""

    layout: object
    task: object
    model: object
    batched: bool
    num_tasks: int
    num_points: int

    def _trace_sites(self):
        raise NotImplementedError

    def _user_arguments(self) -> tuple[tuple, dict]:
        raise NotImplementedError

    def _observed_ids(self) -> set[int]:
        raise NotImplementedError

    @staticmethod
    def _is_array(value) -> bool:
        raise NotImplementedError

    def constant(self) -> dict[str, NamedArray]:
        """The model's array arguments other than the observations, named by parameter.

        The axes that index tasks and data points are named after the tasks and data plates.
        """
        try:
            names = list(inspect.signature(self.model).parameters)
        except (TypeError, ValueError):
            names = []
        lead = ([self._tasks_name()] if self.batched else []) + [self.task.log_joint.data_plate]
        sizes = ([self.num_tasks] if self.batched else []) + [self.num_points]
        args, kwargs = self._user_arguments()
        observed = self._observed_ids()
        return named_constants(names, args, kwargs, observed, lead, sizes, is_array=self._is_array)

    def site_dims(self) -> dict[str, tuple[str, ...]]:
        """Dims of each global site's value after the sample dim: ``(tasks?, name_dim_i…)``,
        a group plate's dim named after the plate."""
        lead = (self._tasks_name(),) if self.batched else ()
        dims = {}
        for site in self.layout.sites:
            names = list(event_dims(site.name, site.event_shape))
            for plate in site.plates:
                names[len(site.plate_shape) + plate.dim] = plate.name
            dims[site.name] = lead + tuple(names)
        return dims

    def _tasks_name(self) -> str:
        return tasks_plate_name(self._trace_sites(), self.layout)

    @staticmethod
    def _with_dims(name: str, value, batch_dims, event_shape: tuple[int, ...]) -> NamedArray:
        """Site ``name``'s ``value`` named: ``batch_dims``, then one ``name_dim_i`` per
        event dim."""
        return NamedArray(value, (*batch_dims, *event_dims(name, event_shape)))


def check_num_draws(num_samples) -> int:
    """``num_samples`` as an int, refused with one line unless an integer ``≥ 2``."""
    if int(num_samples) != num_samples or num_samples < 2:
        raise ValueError(f"num_samples must be an integer ≥ 2, got {num_samples!r}")
    return int(num_samples)


def event_dims(name: str, shape: tuple[int, ...], start: int = 0) -> tuple[str, ...]:
    """ArviZ-style names ``name_dim_i`` of the event dims of ``shape``."""
    return tuple(f"{name}_dim_{start + i}" for i in range(len(shape)))


def checked_distribution(distribution, layout, num_tasks: int):
    """``distribution`` with batch ``(num_tasks,)`` (``()`` expanded for one dataset) and
    event ``(D,)`` over the layout's unconstrained latents, else a ``ValueError``."""
    if tuple(distribution.event_shape) != (layout.latent_dim,):
        raise ValueError(
            f"the posterior's event shape {tuple(distribution.event_shape)} does not match "
            f"the model's {layout.latent_dim} unconstrained global latents {layout.signature()}"
        )
    expected = (num_tasks,)
    if tuple(distribution.batch_shape) == () and expected == (1,):
        distribution = distribution.expand(expected)
    if tuple(distribution.batch_shape) != expected:
        raise ValueError(
            f"the posterior's batch shape {tuple(distribution.batch_shape)} does not match "
            f"the {num_tasks} task(s) in the data"
        )
    return distribution


def tasks_plate_name(sites, layout) -> str:
    """The name of the plate of ``layout``'s tasks dim among the traced ``sites``."""
    for site in sites:
        for frame in site.get("cond_indep_stack", ()):
            if frame.dim == layout.tasks_dim and frame.size == layout.num_tasks:
                return frame.name
    return "tasks"


def named_constants(
    names, args, kwargs, observed_ids, lead, sizes, *, is_array
) -> dict[str, NamedArray]:
    """The model's array arguments other than the observations, named by parameter.

    ``names`` are the model's parameter names (positional ``args`` take them in order);
    an argument whose leading sizes equal ``sizes`` gets the plate names ``lead`` there.
    """
    named = dict(zip(names, args, strict=False)) | dict(kwargs)
    named |= {f"arg_{i}": value for i, value in enumerate(args[len(names) :], len(names))}
    result = {}
    for name, value in named.items():
        if not is_array(value) or id(value) in observed_ids:
            continue
        dims = tuple(lead) if tuple(value.shape[: len(lead)]) == tuple(sizes) else ()
        dims += event_dims(name, tuple(value.shape[len(dims) :]))
        result[name] = NamedArray(value, dims)
    return result
