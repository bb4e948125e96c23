"""The joint unconstrained latent of a model's global sites, for either backend.

For global latents ``θ = (θ_1, …, θ_S)`` outside the data plate the guide works on one
unconstrained vector per task,

    z = (T_1⁻¹(θ_1), …, T_S⁻¹(θ_S)) ∈ ℝ^D,    T_s = biject_to(support of θ_s),

so that a Gaussian over ``z`` is a valid posterior whatever the supports (positive
scales, simplices, intervals), with ``log p(z) = log p(T(z)) + log |det ∂T/∂z|``.
NumPyro's bijections use the same parametrizations as PyTorch's (identity, exp,
stick-breaking), so the same ``z`` means the same ``θ`` in both backends and a
checkpoint's latent layout carries over.

:class:`GlobalSite` and :class:`LatentLayout` are written once: a site names its backend
(``"pyro"`` or ``"numpyro"``), whose object (:func:`~iai_prob.models.backend.get_backend`)
supplies ``biject_to``, the constraints and the array operations. Each backend finds the
sites in its own traces (:func:`iai_prob.inference.sites.discover_layout`,
:func:`iai_prob.numpyro.sites.discover_layout`).

Batches of tasks: when the model wraps its globals in a ``"tasks"`` plate at dim
``-t``, the joint latent has batch shape ``(T,) + (1,)*(t-1)`` and each site value
``(T,) + (1,)*(t-1) + event_shape``, which is what the model's own plates produce.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import NamedTuple

from iai_prob.models.backend import get_backend

__all__ = [
    "GlobalSite",
    "GroupPlate",
    "LatentLayout",
    "global_site",
    "group_plates",
    "layout_difference",
    "plate_shape",
    "transform_kind",
]


class GroupPlate(NamedTuple):
    """A plate a global site lies in, other than the data and tasks plates: its name, its
    size and its (negative) dim."""

    name: str
    size: int
    dim: int


@dataclass(frozen=True)
class GlobalSite:
    """One global latent site: its event shapes in both spaces and its bijection.

    ``kind`` names the bijection's classes (e.g. ``IndependentTransform/ExpTransform``) so
    that equal layouts compare (and hash) equal across traces; ``support`` and
    ``backend`` do not take part in comparisons.

    A site inside group plates (plates other than the data and tasks plates: one value per
    group, as the group effects of a hierarchical model) holds ``plates``, its
    :class:`GroupPlate` records, and ``event_shape`` starts with :attr:`plate_shape`, one
    task's batch shape from those plates (a group plate's size at its dim, 1 elsewhere):
    the joint latent holds every group's value, and :meth:`LatentLayout.unpack` puts them
    back at the plates' dims for the model (``model_shapes=True``).
    """

    name: str
    event_shape: tuple[int, ...]
    unconstrained_shape: tuple[int, ...]
    event_dim: int
    kind: str
    support: object = field(compare=False, hash=False)
    backend: str = field(default="pyro", compare=False, hash=False)
    plates: tuple[GroupPlate, ...] = ()

    @property
    def plate_shape(self) -> tuple[int, ...]:
        """One task's batch shape from the site's group plates (``()`` outside any)."""
        return plate_shape(self.plates)

    @property
    def numel(self) -> int:
        return math.prod(self.unconstrained_shape)

    @property
    def transform(self):
        return get_backend(self.backend).biject_to(self.support)

    @property
    def is_elementwise(self) -> bool:
        """Whether the bijection acts on each coordinate alone (so it is monotone in each)."""
        independent = get_backend(self.backend).IndependentTransform
        transform = self.transform
        while isinstance(transform, independent):
            transform = transform.base_transform
        return transform.domain.event_dim == 0

    @property
    def is_real(self) -> bool:
        """Whether the site is unconstrained already (its bijection is the identity)."""
        constraints = get_backend(self.backend).constraints
        support = self.support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        return support is constraints.real


def global_site(
    name: str,
    fn,
    frames,
    *,
    tasks_plate: str,
    backend: str,
    tasks_dim: int | None = None,
) -> GlobalSite:
    """The :class:`GlobalSite` of the global latent ``name`` drawn from ``fn`` inside the
    plate ``frames`` (each with ``name``, ``size``, ``dim``), as each backend's
    ``discover_layout`` reads it from a trace; a plate other than ``tasks_plate`` is a
    group plate (:attr:`GlobalSite.plates`).

    :param tasks_dim: the tasks plate's dim, when the model runs under it: it must lie
        left of every group plate (a task's groups are its own).
    :raises ValueError: naming the site, if its support declares no bijection, is
        discrete, has no bijection to ℝⁿ, or a group plate is subsampled or lies right of
        the tasks plate.
    """
    ppl = get_backend(backend)
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
    plates = tuple(
        _group_plate(name, frame, tasks_dim, tasks_plate)
        for frame in sorted(frames, key=lambda frame: frame.dim)
        if frame.name != tasks_plate
    )
    try:
        transform = ppl.biject_to(fn.support)
    except NotImplementedError as error:
        raise ValueError(
            f"global latent site {name!r} has support {fn.support} with no bijection to "
            "unconstrained space"
        ) from error
    event_shape = tuple(fn.event_shape)
    unconstrained = tuple(transform.inverse_shape(event_shape))
    groups = plate_shape(plates)
    return GlobalSite(
        name,
        groups + event_shape,
        groups + unconstrained,
        len(groups) + len(event_shape),
        transform_kind(transform, ppl.IndependentTransform),
        fn.support,
        backend,
        plates,
    )


@contextlib.contextmanager
def group_plates(plate, site: GlobalSite):
    """The site's group plates entered with the backend's ``plate`` (``pyro.plate`` or
    ``numpyro.plate``), outermost first: a guide draws a grouped site where the model
    does."""
    with contextlib.ExitStack() as stack:
        for group in site.plates:
            stack.enter_context(plate(group.name, group.size, dim=group.dim))
        yield


def plate_shape(plates) -> tuple[int, ...]:
    """One task's batch shape from group ``plates``: each plate's size at its dim, 1 at the
    dims between (``()`` for none)."""
    if not plates:
        return ()
    shape = [1] * max(-plate.dim for plate in plates)
    for plate in plates:
        shape[plate.dim] = plate.size
    return tuple(shape)


def _group_plate(site: str, frame, tasks_dim: int | None, tasks_plate: str) -> GroupPlate:
    """The :class:`GroupPlate` of ``frame``, refused if subsampled or right of the tasks
    plate."""
    size = getattr(frame, "full_size", None) or frame.size
    if frame.size != size:
        raise ValueError(
            f"global latent site {site!r} lies in plate {frame.name!r}, subsampled to "
            f"{frame.size} of {size}; the guide infers every group's value: do not subsample "
            "a plate of latents"
        )
    if tasks_dim is not None and frame.dim <= tasks_dim:
        raise ValueError(
            f"global latent site {site!r} lies in plate {frame.name!r} at dim {frame.dim}, "
            f"left of the tasks plate {tasks_plate!r} at dim {tasks_dim}; put the tasks plate "
            "outermost (a more negative dim) so that each task's groups are its own"
        )
    return GroupPlate(frame.name, int(size), int(frame.dim))


def transform_kind(transform, independent: type) -> str:
    """The class names of ``transform`` and of the transforms it wraps in ``independent``."""
    kind = type(transform).__name__
    while isinstance(transform, independent):
        transform = transform.base_transform
        kind += "/" + type(transform).__name__
    return kind


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
    def to_joint(self, flat):
        """``(*lead, T_flat, D)`` → ``(*lead, *batch_shape, D)``."""
        lead = flat.shape[:-2]
        return flat.reshape(*lead, *self.batch_shape, flat.shape[-1])

    def to_flat(self, joint):
        """``(*lead, *batch_shape, D)`` → ``(*lead, T_flat, D)``."""
        lead = joint.shape[: joint.ndim - 1 - len(self.batch_shape)]
        return joint.reshape(*lead, self.flat_tasks, joint.shape[-1])

    def particles_to_model(self, flat, particle_dim: int):
        """``(S, T_flat, D)`` → ``(S, 1…, *batch_shape, D)`` with S at dim ``particle_dim``."""
        pad = -particle_dim - 1 - len(self.batch_shape)
        joint = self.to_joint(flat)
        return joint.reshape(joint.shape[0], *(1,) * pad, *joint.shape[1:])

    # -------------------------------------------------------- pack / unpack
    def unpack(self, z, *, model_shapes: bool = False):
        """Yield ``(site, constrained value, log |det ∂T/∂z|)`` for a joint latent ``z``.

        ``z`` has shape ``(*lead, D)``; values have shape ``(*lead, *event_shape)``
        and log-Jacobians shape ``(*lead,)``.

        ``model_shapes=True`` gives the values as the model draws them, for ``z`` whose
        ``lead`` dims are the model's batch dims (:meth:`to_joint`,
        :meth:`particles_to_model`, or one task's ``(D,)``): a site in group plates has
        its groups at the plates' dims (``(*lead ⊙ plate_shape, *fn.event_shape)``) and
        its log-Jacobian per group, of the value's batch shape (a site outside group
        plates is as without it).
        """
        if z.shape[-1] != self.latent_dim:
            raise ValueError(
                f"expected a joint latent with {self.latent_dim} entries in its last dim, "
                f"got shape {tuple(z.shape)}"
            )
        lead = tuple(z.shape[:-1])
        position = 0
        for site in self.sites:
            unconstrained = z[..., position : position + site.numel].reshape(
                lead + site.unconstrained_shape
            )
            position += site.numel
            transform = site.transform
            value = transform(unconstrained)
            log_jacobian = transform.log_abs_det_jacobian(unconstrained, value)
            kept = len(lead) + (len(site.plate_shape) if model_shapes else 0)
            extra = getattr(log_jacobian, "ndim", 0) - kept
            if extra > 0:
                log_jacobian = log_jacobian.sum(tuple(range(-extra, 0)))
            if model_shapes and site.plates:
                batch = _with_groups(lead, site.plate_shape)
                value = value.reshape(batch + site.event_shape[len(site.plate_shape) :])
                log_jacobian = log_jacobian.reshape(batch)
            yield site, value, log_jacobian

    def pack(self, values: dict, batch_ndim: int):
        """Map constrained values with ``batch_ndim`` leading dims to the joint ``z``."""
        parts = []
        for site in self.sites:
            if site.name not in values:
                raise ValueError(f"no value for global latent site {site.name!r}")
            backend = get_backend(site.backend)
            unconstrained = site.transform.inv(backend.asarray(values[site.name]))
            batch = unconstrained.shape[:batch_ndim]
            parts.append(unconstrained.reshape(*batch, site.numel))
        return get_backend(self.sites[0].backend).concatenate(parts, axis=-1)


def _with_groups(lead: tuple[int, ...], plate_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The model's batch shape of a grouped site: ``lead`` (the model's batch dims, 1 at
    every group plate's dim) with each plate's size at its dim. The groups follow the
    lead's dims in memory (the tasks plate lies left of every group plate), so a value
    ``(*lead, *plate_shape, …)`` reshapes to it."""
    width = len(plate_shape)
    lead = (1,) * max(0, width - len(lead)) + tuple(lead)
    head, tail = lead[: len(lead) - width], lead[len(lead) - width :]
    return head + tuple(max(size, groups) for size, groups in zip(tail, plate_shape, strict=True))


def layout_difference(expected: list, found: list) -> str:
    """Say how two latent-layout signatures (``[[name, shape], …]``) differ."""
    expected_sites, found_sites = dict(map(tuple, expected)), dict(map(tuple, found))
    parts = []
    missing = [name for name in expected_sites if name not in found_sites]
    unexpected = [name for name in found_sites if name not in expected_sites]
    if missing:
        parts.append(f"missing site(s) {missing}")
    if unexpected:
        parts.append(f"unexpected site(s) {unexpected}")
    for name, shape in expected_sites.items():
        if name in found_sites and list(found_sites[name]) != list(shape):
            parts.append(f"site {name!r} has shape {list(found_sites[name])}, expected {shape}")
    if not parts and list(expected_sites) != list(found_sites):
        parts.append(f"sites in order {list(found_sites)}, expected {list(expected_sites)}")
    return "; ".join(parts)
