"""Posterior predictive draws from one solve: Pyro's ``Predictive``, vectorized for the guide.

``pyro.infer.Predictive(model, guide=guide, num_samples=S)`` calls the guide and then the
model once per draw: for an :class:`~iai_prob.inference.guide.IterativeAmortizedGuide`
the guide's solve is memoized, but the ``2 S`` Pyro traces still cost about a
millisecond each (50x–80x a posterior for 1,000 draws, ``docs/benchmarks.md``). Its
``parallel=True`` cannot help: it runs the guide at the guide's own plate depth (none,
for one dataset), so a vector-valued latent comes back as ``(S, D)``, which the model,
one plate deeper, reads as a batch of ``S`` inside its data plate and refuses.

:class:`Predictive` takes the same arguments and returns the same dictionary (each site
``(S, 1…, *shape)``, as Pyro's sequential ``Predictive`` shapes it). With this guide it
draws the ``S`` latents from one solve (:meth:`IterativeAmortizedGuide.sample
<iai_prob.inference.guide.IterativeAmortizedGuide.sample>`), shapes each draw for the
model's plates (``(S,)``, a 1 for each of the model's plates the site does not live in,
then the site's shape in one model trace) and runs the model once over all of them
through Pyro's own vectorized ``Predictive(model, posterior_samples=…,
parallel=True)`` (not at all when ``return_sites`` names only the guide's sites: the
conditioned model would return the draws). With any other guide, or given
``posterior_samples``, it is Pyro's.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine

__all__ = ["Predictive"]


class Predictive(pyro.infer.Predictive):
    """``pyro.infer.Predictive`` whose draws from an
    :class:`~iai_prob.inference.guide.IterativeAmortizedGuide` cost one solve and one
    vectorized model run (see the module docstring); same arguments, same results."""

    def forward(self, *args, **kwargs):
        from iai_prob.inference.guide import IterativeAmortizedGuide

        if not isinstance(self.guide, IterativeAmortizedGuide) or self.posterior_samples:
            return super().forward(*args, **kwargs)
        draws = self.guide.sample(*args, num_samples=self.num_samples, **kwargs)
        shaped = _shaped_for_model(self.model, draws, self.num_samples, args, kwargs)
        if self.return_sites and set(self.return_sites) <= set(shaped):
            # only the guide's sites: the model, conditioned on them, would return them
            return {site: shaped[site] for site in self.return_sites}
        return pyro.infer.Predictive(
            self.model,
            posterior_samples=shaped,
            num_samples=self.num_samples,
            return_sites=self.return_sites or None,  # with a guide: every site, as Pyro's
            parallel=True,
        )(*args, **kwargs)


def _shaped_for_model(model, draws: dict, num_samples: int, args, kwargs) -> dict:
    """Each site's draws ``(S, …)`` as ``(S, 1…, *shape in the model)``: one 1 for each
    of the model's plate dims the site is not batched over, so that the particle plate
    of ``Predictive(parallel=True)`` sits left of every plate of the model."""
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    sites = [site for site in trace.nodes.values() if site["type"] == "sample"]
    dims = [frame.dim for site in sites for frame in site["cond_indep_stack"] if frame.vectorized]
    nesting = -min(dims) if dims else 0
    shaped = {}
    for name, value in draws.items():
        site = trace.nodes[name]
        ones = (1,) * (nesting - len(site["fn"].batch_shape))
        shaped[name] = value.reshape(num_samples, *ones, *site["value"].shape)
    return shaped
