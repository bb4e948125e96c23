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

from iai_prob import trace_sites
from iai_prob.latent_layout import LatentLayout
from iai_prob.prior_standardization import site_prior
from iai_prob.trace_sites import SampleSite

__all__ = [
    "check_local_latents",
    "discover_layout",
    "plate_frames",
    "sample_sites",
    "site_priors",
]


def _named(fn) -> str:
    """The distribution a message names: under the plate's ``ExpandedDistribution``."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return type(fn).__name__


def sample_sites(trace) -> list[SampleSite]:
    """The sample sites of a NumPyro trace as :class:`~iai_prob.trace_sites.SampleSite`
    records (the twin of :func:`iai_prob.inference.sites.sample_sites`)."""
    return [
        SampleSite(
            site["name"],
            site["fn"],
            tuple(site["cond_indep_stack"]),
            site["is_observed"],
            not site["is_observed"] and not site["infer"].get("is_auxiliary", False),
            site["infer"].get("enumerate") == "parallel",
            _named(site["fn"]),
        )
        for site in trace.values()
        if site["type"] == "sample"
    ]


def plate_frames(trace) -> dict:
    """``{plate name: frame}`` of every plate the sample sites of ``trace`` lie in."""
    return trace_sites.plate_frames(sample_sites(trace))


def check_local_latents(trace, data_plate: str = "data") -> None:
    """:func:`iai_prob.trace_sites.check_local_latents` on a NumPyro trace (the messages
    of :func:`iai_prob.inference.sites.check_local_latents`)."""
    trace_sites.check_local_latents(sample_sites(trace), data_plate, "numpyro.sample")


def discover_layout(trace, *, data_plate: str = "data", tasks_plate: str = "tasks", tasks=None):
    """The global latent sites of a model from a trace of it on one task
    (:func:`iai_prob.trace_sites.discover_layout`).

    ``tasks`` is ``(T, dim)`` of the tasks plate of the batched call, if any; raises what
    :func:`iai_prob.trace_sites.discover_layout` raises.
    """
    return trace_sites.discover_layout(
        sample_sites(trace),
        data_plate=data_plate,
        tasks_plate=tasks_plate,
        backend="numpyro",
        tasks=(None, None) if tasks is None else tasks,
    )


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
