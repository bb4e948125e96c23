"""Global latent sites of a NumPyro model, found from a trace and packed into one vector
(:mod:`iai_prob.latent_layout`, shared with the PyTorch side).

As :mod:`iai_prob.inference.sites` does for Pyro traces: for global latents ``θ = (θ_1, …, θ_S)``
outside the data plate the guide works on one unconstrained vector per task,

    z = (T_1⁻¹(θ_1), …, T_S⁻¹(θ_S)) ∈ ℝ^D,    T_s = biject_to(support of θ_s),

with ``log p(z) = log p(T(z)) + log |det ∂T/∂z|``. NumPyro's bijections use the same
parametrizations as PyTorch's (identity, exp, stick-breaking), so the same ``z`` means
the same ``θ`` in both backends and a checkpoint's latent layout carries over.
"""

from __future__ import annotations

import jax
import numpy as np

from iai_prob.latent_layout import LatentLayout, global_site
from iai_prob.local_latents import check_local_latent
from iai_prob.prior_standardization import site_prior

__all__ = ["check_local_latents", "discover_layout", "plate_frames", "site_priors"]


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
        plates = [frame.name for frame in site["cond_indep_stack"]]
        sites.append(
            global_site(
                name,
                site["fn"],
                plates,
                data_plate=data_plate,
                tasks_plate=tasks_plate,
                backend="numpyro",
            )
        )
    if not sites:
        raise ValueError(
            f"the model has no latent site outside the data plate {data_plate!r}; "
            "there is nothing for an amortized guide to infer"
        )
    num_tasks, tasks_dim = tasks if tasks is not None else (None, None)
    return LatentLayout(tuple(sites), num_tasks, tasks_dim, max_plate_nesting)


def site_priors(trace, layout: LatentLayout, num_draws: int, seed: int) -> dict:
    """``{site: SitePrior}`` as :func:`iai_prob.inference.sites.site_priors` reads them
    from a Pyro trace, the draws from ``PRNGKey(seed)``."""
    priors = {}
    keys = jax.random.split(jax.random.PRNGKey(seed), len(layout.sites))
    for site, key in zip(layout.sites, keys, strict=True):
        fn = trace[site.name]["fn"]
        priors[site.name] = site_prior(
            site,
            lambda fn=fn: (np.asarray(fn.mean), np.sqrt(np.asarray(fn.variance))),
            lambda fn=fn, site=site, key=key: np.asarray(
                site.transform.inv(fn.sample(key, (num_draws,)))
            ),
        )
    return priors
