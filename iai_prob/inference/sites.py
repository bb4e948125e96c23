"""Global latent sites of a Pyro model, found from a trace (the layout they are packed
into is backend-neutral: :mod:`iai_prob.latent_layout`).

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

import torch
from pyro.poutine.util import site_is_subsample

from iai_prob.latent_layout import LatentLayout, global_site
from iai_prob.local_latents import check_local_latent
from iai_prob.prior_standardization import site_prior

__all__ = ["check_local_latents", "discover_layout", "site_priors"]


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
        plates = [frame.name for frame in site["cond_indep_stack"]]
        sites.append(
            global_site(
                name,
                site["fn"],
                plates,
                data_plate=data_plate,
                tasks_plate=tasks_plate,
                backend="pyro",
            )
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


def site_priors(trace, layout: LatentLayout, num_draws: int, seed: int) -> dict:
    """``{site: SitePrior}`` of each global site's distribution in ``trace`` (its prior,
    given its parents' values there; :mod:`iai_prob.prior_standardization`): the exact
    mean and standard deviation of a real-supported site that has them, else
    ``num_draws`` draws seeded by ``seed`` mapped to the unconstrained space; the caller's
    random state is left as it was."""
    priors = {}
    values = [trace.nodes[site.name]["value"] for site in layout.sites]
    cuda = sorted({v.device.index or 0 for v in values if v.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(seed)  # seeds the CUDA generators too
        for site in layout.sites:
            fn = trace.nodes[site.name]["fn"]
            priors[site.name] = site_prior(
                site,
                lambda fn=fn: (fn.mean.cpu().numpy(), fn.stddev.cpu().numpy()),
                lambda fn=fn, site=site: site.transform.inv(fn.sample((num_draws,))).cpu().numpy(),
            )
    return priors
