"""A model's sample sites read alike from a Pyro or a NumPyro trace, and what both backends
find from them: the refusal of local latents the guide would not infer and the layout of
the global latents (:class:`~iai_prob.latent_layout.LatentLayout`).

Each backend turns its own trace format into :class:`SampleSite` records
(:func:`iai_prob.inference.sites.sample_sites` from ``trace.nodes``,
:func:`iai_prob.numpyro.sites.sample_sites` from NumPyro's ordered dict); everything
after that, with its error messages, is written once here. Imports neither framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from iai_prob.latent_layout import LatentLayout, global_site
from iai_prob.local_latents import check_local_latent

__all__ = ["SampleSite", "check_local_latents", "discover_layout", "plate_frames"]


class SampleSite(NamedTuple):
    """One sample site of a trace, as both backends' traces hold it.

    :ivar name: the site's name.
    :ivar fn: its distribution (the framework's object).
    :ivar frames: its plates, innermost first (the trace's ``cond_indep_stack``).
    :ivar observed: whether it is observed.
    :ivar latent: whether the guide must account for it (sampled, not auxiliary).
    :ivar enumerated: whether it asks for parallel enumeration.
    :ivar distribution: the distribution's name, for messages.
    """

    name: str
    fn: object
    frames: tuple
    observed: bool
    latent: bool
    enumerated: bool
    distribution: str

    def in_plate(self, plate: str) -> bool:
        return any(frame.name == plate for frame in self.frames)


def plate_frames(sites: Iterable[SampleSite]) -> dict:
    """``{plate name: frame}`` of every plate the sites lie in."""
    return {frame.name: frame for site in sites for frame in site.frames}


def check_local_latents(sites: Sequence[SampleSite], data_plate: str, primitive: str) -> None:
    """Refuse a latent site inside the data plate unless the log joint sums it out.

    A model with nothing observed in the data plate (observations not passed, as in
    ``guide(x)``) is left to the task-data readers, which say to pass them.

    :param str primitive: the sampling call a message names (``"pyro.sample"``).
    :raises ValueError: naming the site, for a continuous local latent (never inferred:
        the guide covers the globals only) and for a discrete one that is not enumerated
        in parallel or cannot be enumerated (its support is not finite).
    """
    in_data = [site for site in sites if site.in_plate(data_plate)]
    if not any(site.observed for site in in_data):
        return
    for site in in_data:
        if not site.latent:
            continue
        try:
            discrete = site.fn.support.is_discrete
        except NotImplementedError:
            discrete = False
        check_local_latent(
            site.name,
            data_plate,
            discrete=discrete,
            enumerated=site.enumerated,
            enumerable=discrete and site.fn.has_enumerate_support,
            distribution=site.distribution,
            primitive=primitive,
        )


def discover_layout(
    sites: Sequence[SampleSite],
    *,
    data_plate: str,
    tasks_plate: str,
    backend: str,
    tasks: tuple | None = None,
    params: Sequence[str] = (),
) -> LatentLayout:
    """The global latent sites of a model and its task batch, from its sample sites.

    :param str backend: ``"pyro"`` or ``"numpyro"`` (the bijections' framework, and the
        plate call a message names).
    :param tasks: ``(T, dim)`` of the tasks plate when the sites come from a trace of
        one task of a batch; ``None`` reads it from the sites' own plates.
    :param params: the trace's parameter sites, named when no latent is found.
    :raises ValueError: if the data plate is absent, a global site is discrete, lies in a
        subsampled group plate or one right of the tasks plate, or has a support with no
        bijection to ℝⁿ, or a local latent would not be inferred
        (:func:`check_local_latents`).
    """
    frames = plate_frames(sites)
    if data_plate not in frames:
        raise ValueError(
            f"the model has no plate named {data_plate!r}; found plates {sorted(frames)}. "
            f"Put the observations inside {backend}.plate({data_plate!r}, N) or pass "
            "data_plate=..."
        )
    check_local_latents(sites, data_plate, f"{backend}.sample")
    if tasks is None:
        frame = frames.get(tasks_plate)
        tasks = (None, None) if frame is None else (frame.size, frame.dim)
    layout_sites = tuple(
        global_site(
            site.name,
            site.fn,
            site.frames,
            tasks_plate=tasks_plate,
            backend=backend,
            tasks_dim=tasks[1],
        )
        for site in sites
        if site.latent and not site.in_plate(data_plate)
    )
    if not layout_sites:
        hint = (
            f": its {backend}.param site(s) {list(params)} are point estimates, not latents; "
            f"give each a prior with {backend}.sample to infer it"
            if params
            else ""
        )
        raise ValueError(
            f"the model has no latent site outside the data plate {data_plate!r}; "
            f"there is nothing for an amortized guide to infer{hint}"
        )
    return LatentLayout(
        sites=layout_sites,
        num_tasks=tasks[0],
        tasks_dim=tasks[1],
        max_plate_nesting=max(-frame.dim for frame in frames.values()),
    )
