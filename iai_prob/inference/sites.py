"""Global latent sites of a Pyro model, found from a trace and packed into one vector.

For a model whose global latents ``θ = (θ_1, …, θ_S)`` live outside the data
plate, the guide works on one unconstrained vector per task,

    z = (T_1⁻¹(θ_1), …, T_S⁻¹(θ_S)) ∈ ℝ^D,    T_s = biject_to(support of θ_s),

so that a Gaussian over ``z`` is a valid posterior whatever the supports
(positive scales, simplices, intervals). The density of ``z`` is that of θ
times the Jacobian, ``log p(z) = log p(T(z)) + log |det ∂T/∂z|``.

Batches of tasks: when the model wraps its globals in a ``"tasks"`` plate at
dim ``-t``, the joint latent has batch shape ``(T,) + (1,)*(t-1)`` and each site
value ``(T,) + (1,)*(t-1) + event_shape``, which is what the model's own
plates produce. A global site inside any other plate is refused with a clear
error (declare its independence with ``.to_event`` instead).

Local latents (inside the data plate) are supported only when they are discrete and
enumerated (``infer={"enumerate": "parallel"}``): the log joint sums them out exactly
(:mod:`iai_prob.inference.log_joint`). Any other local latent is refused by name: the
guide would cover only the globals, and the log joint would draw the local from its
prior instead of inferring it, a silently wrong posterior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro.distributions.util import sum_rightmost
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to, constraints, transforms

from iai_prob.local_latents import check_local_latent

__all__ = ["GlobalSite", "LatentLayout", "check_local_latents", "discover_layout"]


@dataclass(frozen=True)
class GlobalSite:
    """One global latent site: its event shapes in both spaces and its bijection."""

    name: str
    event_shape: tuple[int, ...]
    unconstrained_shape: tuple[int, ...]
    event_dim: int
    support: object

    @property
    def numel(self) -> int:
        return math.prod(self.unconstrained_shape)

    @property
    def transform(self):
        return biject_to(self.support)

    @property
    def is_elementwise(self) -> bool:
        """Whether the bijection acts on each coordinate alone (so it is monotone in each)."""
        transform = self.transform
        while isinstance(transform, transforms.IndependentTransform):
            transform = transform.base_transform
        return transform.domain.event_dim == 0

    @property
    def is_real(self) -> bool:
        """Whether the site is unconstrained already (its bijection is the identity)."""
        support = self.support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        return support is constraints.real


@dataclass(frozen=True)
class LatentLayout:
    """Where each global site sits in the joint unconstrained vector, and the task batch.

    :ivar sites: ordered global sites.
    :ivar num_tasks: ``T`` when the model ran under the tasks plate, else ``None``.
    :ivar tasks_dim: the (negative) dim of the tasks plate, or ``None``.
    :ivar max_plate_nesting: the deepest plate dim used by the model.
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

    @property
    def flat_tasks(self) -> int:
        """Number of tasks in the flat ``(T, D)`` view used by the refinement (1 if unbatched)."""
        return 1 if self.num_tasks is None else self.num_tasks

    def signature(self) -> list[list]:
        """JSON-friendly description of the latent layout (checked when loading)."""
        return [[site.name, list(site.unconstrained_shape)] for site in self.sites]

    # ----------------------------------------------------------- reshaping
    def to_joint(self, flat: torch.Tensor) -> torch.Tensor:
        """``(*lead, T_flat, D)`` → ``(*lead, *batch_shape, D)``."""
        lead = flat.shape[:-2]
        return flat.reshape(*lead, *self.batch_shape, flat.shape[-1])

    def to_flat(self, joint: torch.Tensor) -> torch.Tensor:
        """``(*lead, *batch_shape, D)`` → ``(*lead, T_flat, D)``."""
        lead = joint.shape[: joint.dim() - 1 - len(self.batch_shape)]
        return joint.reshape(*lead, self.flat_tasks, joint.shape[-1])

    def particles_to_model(self, flat: torch.Tensor, particle_dim: int) -> torch.Tensor:
        """``(S, T_flat, D)`` → ``(S, 1…, *batch_shape, D)`` with S at dim ``particle_dim``."""
        pad = -particle_dim - 1 - len(self.batch_shape)
        joint = self.to_joint(flat)
        return joint.reshape(joint.shape[0], *(1,) * pad, *joint.shape[1:])

    # -------------------------------------------------------- pack / unpack
    def unpack(self, z: torch.Tensor):
        """Yield ``(site, constrained value, log |det ∂T/∂z|)`` for a joint latent ``z``.

        ``z`` has shape ``(*lead, D)``; values have shape ``(*lead, *event_shape)``
        and log-Jacobians shape ``(*lead,)``.
        """
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
            log_jacobian = sum_rightmost(log_jacobian, log_jacobian.dim() - len(lead))
            yield site, value, log_jacobian

    def pack(self, values: dict[str, torch.Tensor], batch_ndim: int) -> torch.Tensor:
        """Map constrained values with ``batch_ndim`` leading dims to the joint ``z``."""
        parts = []
        for site in self.sites:
            if site.name not in values:
                raise ValueError(f"no value for global latent site {site.name!r}")
            unconstrained = site.transform.inv(values[site.name])
            batch = unconstrained.shape[:batch_ndim]
            parts.append(unconstrained.reshape(*batch, site.numel))
        return torch.cat(parts, dim=-1)


def _is_latent(site) -> bool:
    return (
        site["type"] == "sample"
        and not site_is_subsample(site)
        and not site["is_observed"]
        and not site["infer"].get("is_auxiliary", False)
        and not site["infer"].get("_do_not_trace", False)
    )


def _is_global(site, data_plate: str) -> bool:
    return _is_latent(site) and all(frame.name != data_plate for frame in site["cond_indep_stack"])


def check_local_latents(trace, data_plate: str = "data") -> None:
    """Refuse a latent site inside the data plate unless the log joint sums it out.

    A model with nothing observed in the data plate (observations not passed, as in
    ``guide(x)``) is left to :func:`~iai_prob.inference.task_data.read_task_data`, which
    says to pass them.

    :raises ValueError: naming the site, for a continuous local latent (never inferred:
        the guide covers the globals only) and for a discrete one that is not enumerated
        in parallel or cannot be enumerated (its support is not finite).
    """
    if not any(
        site["type"] == "sample"
        and site["is_observed"]
        and not site_is_subsample(site)
        and any(frame.name == data_plate for frame in site["cond_indep_stack"])
        for site in trace.nodes.values()
    ):
        return
    for name, site in trace.nodes.items():
        if not _is_latent(site) or _is_global(site, data_plate):
            continue
        fn = site["fn"]
        try:
            discrete = fn.support.is_discrete
        except NotImplementedError:
            discrete = False
        check_local_latent(
            name,
            data_plate,
            discrete=discrete,
            enumerated=site["infer"].get("enumerate") == "parallel",
            enumerable=discrete and fn.has_enumerate_support,
            distribution=type(fn).__name__,
            primitive="pyro.sample",
        )


def discover_layout(trace, *, data_plate: str = "data", tasks_plate: str = "tasks"):
    """Find the global latent sites and task batch of a model from one of its traces.

    :raises ValueError: if the data plate is absent, a global site is discrete, lies in a
        plate other than ``tasks_plate``, or has a support with no bijection to ℝⁿ, or a
        local latent would not be inferred (:func:`check_local_latents`).
    """
    frames = {}
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            for frame in site["cond_indep_stack"]:
                frames[frame.name] = frame
    if data_plate not in frames:
        raise ValueError(
            f"the model has no plate named {data_plate!r}; found plates {sorted(frames)}. "
            f"Put the observations inside pyro.plate({data_plate!r}, N) or pass data_plate=..."
        )
    max_plate_nesting = max(-frame.dim for frame in frames.values())
    tasks_frame = frames.get(tasks_plate)
    check_local_latents(trace, data_plate)

    sites = []
    for name, site in trace.nodes.items():
        if not _is_global(site, data_plate):
            continue
        fn = site["fn"]
        try:
            discrete = fn.support.is_discrete
        except NotImplementedError:  # constraints.dependent and other undeclared supports
            raise ValueError(
                f"global latent site {name!r} has support {fn.support}, which declares no "
                "bijection to unconstrained space; give its distribution a concrete support"
            ) from None
        if discrete:
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
        unconstrained_shape = tuple(transform.inv.forward_shape(event_shape))
        sites.append(
            GlobalSite(name, event_shape, unconstrained_shape, len(event_shape), fn.support)
        )
    if not sites:
        params = [name for name, site in trace.nodes.items() if site["type"] == "param"]
        hint = (
            f": its pyro.param site(s) {params} are point estimates, not latents; give each a "
            "prior with pyro.sample to infer it"
            if params
            else ""
        )
        raise ValueError(
            f"the model has no latent site outside the data plate {data_plate!r}; "
            f"there is nothing for an amortized guide to infer{hint}"
        )
    return LatentLayout(
        sites=tuple(sites),
        num_tasks=None if tasks_frame is None else tasks_frame.size,
        tasks_dim=None if tasks_frame is None else tasks_frame.dim,
        max_plate_nesting=max_plate_nesting,
    )
