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

from iai_prob import trace_sites
from iai_prob.latent_layout import LatentLayout
from iai_prob.prior_standardization import site_prior
from iai_prob.trace_sites import SampleSite

__all__ = ["check_local_latents", "discover_layout", "sample_sites", "site_priors"]


def sample_sites(trace) -> list[SampleSite]:
    """The sample sites of a Pyro trace (plates' subsample sites left out) as
    :class:`~iai_prob.trace_sites.SampleSite` records."""
    return [
        SampleSite(
            name,
            site["fn"],
            tuple(site["cond_indep_stack"]),
            site["is_observed"],
            not site["is_observed"]
            and not site["infer"].get("is_auxiliary", False)
            and not site["infer"].get("_do_not_trace", False),
            site["infer"].get("enumerate") == "parallel",
            type(site["fn"]).__name__,
        )
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]


def check_local_latents(trace, data_plate: str = "data") -> None:
    """:func:`iai_prob.trace_sites.check_local_latents` on a Pyro trace: a latent site
    inside the data plate is refused by name unless the log joint sums it out."""
    trace_sites.check_local_latents(sample_sites(trace), data_plate, "pyro.sample")


def discover_layout(trace, *, data_plate: str = "data", tasks_plate: str = "tasks"):
    """Find the global latent sites and task batch of a model from one of its traces
    (:func:`iai_prob.trace_sites.discover_layout`; a model without latents is told which
    of its ``pyro.param`` sites would need a prior); raises what it raises.
    """
    return trace_sites.discover_layout(
        sample_sites(trace),
        data_plate=data_plate,
        tasks_plate=tasks_plate,
        backend="pyro",
        params=[name for name, site in trace.nodes.items() if site["type"] == "param"],
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
