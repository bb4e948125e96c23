"""Global latent sites of a NumPyro model, found from a trace and packed into one vector.

The twin of :mod:`iai_prob.inference.sites`: for global latents ``θ = (θ_1, …, θ_S)``
outside the data plate the guide works on one unconstrained vector per task,

    z = (T_1⁻¹(θ_1), …, T_S⁻¹(θ_S)) ∈ ℝ^D,    T_s = biject_to(support of θ_s),

with ``log p(z) = log p(T(z)) + log |det ∂T/∂z|``. NumPyro's bijections use the same
parametrizations as PyTorch's (identity, exp, stick-breaking), so the same ``z`` means
the same ``θ`` in both backends and a checkpoint's latent layout carries over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax.numpy as jnp
from numpyro.distributions import constraints
from numpyro.distributions.transforms import IndependentTransform, biject_to

from iai_prob.local_latents import check_local_latent

__all__ = ["GlobalSite", "LatentLayout", "check_local_latents", "discover_layout", "plate_frames"]


@dataclass(frozen=True)
class GlobalSite:
    """One global latent site: its event shapes in both spaces and its bijection."""

    name: str
    event_shape: tuple[int, ...]
    unconstrained_shape: tuple[int, ...]
    event_dim: int
    kind: str  # the bijection's class, so that equal layouts compare equal across traces
    support: object = field(compare=False, hash=False)

    @property
    def numel(self) -> int:
        return math.prod(self.unconstrained_shape)

    @property
    def transform(self):
        return biject_to(self.support)

    @property
    def is_elementwise(self) -> bool:
        """Whether the bijection acts on each coordinate alone."""
        transform = self.transform
        while isinstance(transform, IndependentTransform):
            transform = transform.base_transform
        return transform.domain.event_dim == 0

    @property
    def is_real(self) -> bool:
        support = self.support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        return support is constraints.real


@dataclass(frozen=True)
class LatentLayout:
    """Where each global site sits in the joint unconstrained vector.

    :ivar sites: ordered global sites.
    :ivar num_tasks: ``T`` when the model ran under the tasks plate, else ``None``.
    :ivar tasks_dim: the (negative) dim of the tasks plate, or ``None``.
    :ivar max_plate_nesting: the deepest plate dim of the model on one task.
    """

    sites: tuple[GlobalSite, ...]
    num_tasks: int | None
    tasks_dim: int | None
    max_plate_nesting: int

    @property
    def latent_dim(self) -> int:
        return sum(site.numel for site in self.sites)

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(site.name for site in self.sites)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Batch shape of the joint latent: ``()`` or ``(T, 1, …)`` aligned to the tasks dim."""
        if self.num_tasks is None:
            return ()
        return (self.num_tasks,) + (1,) * (-self.tasks_dim - 1)

    def signature(self) -> list[list]:
        """JSON-friendly description of the latent layout (checked when loading)."""
        return [[site.name, list(site.unconstrained_shape)] for site in self.sites]

    def unpack(self, z):
        """Yield ``(site, constrained value, log |det ∂T/∂z|)`` for ``z`` ``(*lead, D)``."""
        if z.shape[-1] != self.latent_dim:
            raise ValueError(
                f"expected a joint latent with {self.latent_dim} entries in its last dim, "
                f"got shape {tuple(z.shape)}"
            )
        lead = z.shape[:-1]
        position = 0
        for site in self.sites:
            unconstrained = z[..., position : position + site.numel].reshape(
                tuple(lead) + site.unconstrained_shape
            )
            position += site.numel
            transform = site.transform
            value = transform(unconstrained)
            log_jacobian = transform.log_abs_det_jacobian(unconstrained, value)
            extra = jnp.ndim(log_jacobian) - len(lead)
            if extra > 0:
                log_jacobian = log_jacobian.sum(tuple(range(-extra, 0)))
            yield site, value, log_jacobian

    def pack(self, values: dict, batch_ndim: int):
        """Map constrained values with ``batch_ndim`` leading dims to the joint ``z``."""
        parts = []
        for site in self.sites:
            if site.name not in values:
                raise ValueError(f"no value for global latent site {site.name!r}")
            unconstrained = site.transform.inv(jnp.asarray(values[site.name]))
            batch = unconstrained.shape[:batch_ndim]
            parts.append(unconstrained.reshape(*batch, site.numel))
        return jnp.concatenate(parts, axis=-1)


def plate_frames(trace) -> dict:
    """``{plate name: frame}`` of every plate the sample sites of ``trace`` lie in."""
    frames = {}
    for site in trace.values():
        if site["type"] == "sample":
            for frame in site["cond_indep_stack"]:
                frames[frame.name] = frame
    return frames


def _is_latent(site) -> bool:
    return (
        site["type"] == "sample"
        and not site["is_observed"]
        and not site["infer"].get("is_auxiliary", False)
    )


def _is_global(site, data_plate: str) -> bool:
    return _is_latent(site) and all(frame.name != data_plate for frame in site["cond_indep_stack"])


def check_local_latents(trace, data_plate: str = "data") -> None:
    """Refuse a latent site inside the data plate unless the log joint sums it out (the
    twin of :func:`iai_prob.inference.sites.check_local_latents`, same messages).

    :raises ValueError: naming the site, for a continuous local latent and for a discrete
        one that is not enumerated in parallel or has no finite support.
    """
    in_data = [
        site
        for site in trace.values()
        if site["type"] == "sample"
        and any(frame.name == data_plate for frame in site["cond_indep_stack"])
    ]
    if not any(site["is_observed"] for site in in_data):
        return  # observations not passed: read_task_data says to pass them
    for site in in_data:
        if not _is_latent(site):
            continue
        fn = site["fn"]
        while hasattr(fn, "base_dist"):  # the plate's ExpandedDistribution, to name it
            fn = fn.base_dist
        check_local_latent(
            site["name"],
            data_plate,
            discrete=site["fn"].support.is_discrete,
            enumerated=site["infer"].get("enumerate") == "parallel",
            enumerable=site["fn"].has_enumerate_support,
            distribution=type(fn).__name__,
            primitive="numpyro.sample",
        )


def discover_layout(trace, *, data_plate: str = "data", tasks_plate: str = "tasks", tasks=None):
    """The global latent sites of a model from a trace of it on one task.

    ``tasks`` is ``(T, dim)`` of the tasks plate of the batched call, if any.

    :raises ValueError: if the data plate is absent, a global site is discrete, lies in a
        plate other than ``tasks_plate``, or has a support with no bijection to ℝⁿ, or a
        local latent would not be inferred (:func:`check_local_latents`).
    """
    frames = plate_frames(trace)
    if data_plate not in frames:
        raise ValueError(
            f"the model has no plate named {data_plate!r}; found plates {sorted(frames)}. "
            f"Put the observations inside numpyro.plate({data_plate!r}, N) or pass "
            "data_plate=..."
        )
    max_plate_nesting = max(-frame.dim for frame in frames.values())
    check_local_latents(trace, data_plate)
    sites = []
    for name, site in trace.items():
        if not _is_global(site, data_plate):
            continue
        fn = site["fn"]
        if fn.support.is_discrete:
            raise ValueError(
                f"global latent site {name!r} is discrete ({fn.support}); IterativeAmortizedGuide "
                "infers continuous globals only. Enumerate or marginalize it in the model."
            )
        other = [f.name for f in site["cond_indep_stack"] if f.name != tasks_plate]
        if other:
            raise ValueError(
                f"global latent site {name!r} lies in plate(s) {other}; only the data plate "
                f"{data_plate!r} and the tasks plate {tasks_plate!r} are supported. Declare the "
                "site's dimensions with .expand(...).to_event(...) instead."
            )
        try:
            transform = biject_to(fn.support)
        except NotImplementedError as error:
            raise ValueError(
                f"global latent site {name!r} has support {fn.support} with no bijection to "
                "unconstrained space"
            ) from error
        event_shape = tuple(fn.event_shape)
        unconstrained_shape = tuple(transform.inverse_shape(event_shape))
        kind = type(transform).__name__
        while isinstance(transform, IndependentTransform):
            transform = transform.base_transform
            kind += "/" + type(transform).__name__
        sites.append(
            GlobalSite(name, event_shape, unconstrained_shape, len(event_shape), kind, fn.support)
        )
    if not sites:
        raise ValueError(
            f"the model has no latent site outside the data plate {data_plate!r}; "
            "there is nothing for an amortized guide to infer"
        )
    num_tasks, tasks_dim = tasks if tasks is not None else (None, None)
    return LatentLayout(tuple(sites), num_tasks, tasks_dim, max_plate_nesting)
