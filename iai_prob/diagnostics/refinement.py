"""ELBO (and exact KL) of the posterior against the refinement step.

Iterative amortized inference (Mittal, Mahajan, Lajoie, Pezeshki 2025) moves the state
``λ_k`` mini-batch by mini-batch; since

    ELBO(λ_k) = log p(D) − KL(q_{λ_k} ‖ p(θ | D)),

a rising ELBO is a falling KL. For conjugate families (``family.has_exact_posterior``) or
when the exact posterior is passed, ``KL(q_{λ_k} ‖ p(θ | D))`` is computed in closed form
(:func:`~iai_prob.inference.objectives.kl_to_exact`) and ``log p(D)`` drawn as the ELBO's
ceiling. Values are per dataset (averaged over a batch of tasks).
"""

from __future__ import annotations

import numpy as np
import torch

from iai_prob.diagnostics.adapter import is_numpyro
from iai_prob.diagnostics.curves import RefinementCurve
from iai_prob.inference.objectives import kl_to_exact

__all__ = ["refinement_curve", "refinement_plot"]


@torch.no_grad()
def refinement_curve(
    guide, *args, num_steps: int | None = None, num_samples: int = 64, exact=None, **kwargs
) -> RefinementCurve:
    """ELBO and, where exact, KL after each refinement step of ``guide`` on the data.

    :param guide: an :class:`~iai_prob.inference.IterativeAmortizedGuide`, or a NumPyro
        guide as the pair ``(guide, params)`` (its ``refinement_trace``; the ELBO's
        ``log p(z, D)`` from NumPyro, see :mod:`.numpyro_refinement`).
    :param int num_steps: refinement steps (default: the guide's, one pass over the data).
    :param int num_samples: Monte Carlo draws per ELBO estimate.
    :param exact: ``None`` (use ``guide.family``'s closed form when it has one), ``False``
        (no KL), or a distribution over the flattened constrained latents.
    """
    if is_numpyro(guide):
        from iai_prob.diagnostics.numpyro_adapter import split_guide
        from iai_prob.diagnostics.numpyro_refinement import numpyro_refinement_curve

        numpyro_guide, params = split_guide(guide)
        return numpyro_refinement_curve(
            numpyro_guide,
            params,
            *args,
            num_steps=num_steps,
            num_samples=num_samples,
            exact=exact,
            **kwargs,
        )
    trace = guide.refinement_trace(*args, num_steps=num_steps, num_samples=num_samples, **kwargs)
    task = guide.prepare(*args, **kwargs)
    num_tasks = task.layout.flat_tasks
    elbo = np.array([float(step.elbo) / num_tasks for step in trace])
    family = getattr(guide, "family", None)
    log_evidence = None
    if exact is None and family is not None and family.has_exact_posterior:
        exact = family.exact_posterior(*args)
        log_evidence = float(family.log_evidence(*args).mean())
    kl = None
    if exact is not None and exact is not False:
        order = tuple(site.name for site in family.latent_sites) if family else None
        kl = np.array(
            [
                float(
                    kl_to_exact(
                        step.state, guide.refiner.family, task.layout, exact, site_order=order
                    ).mean()
                )
                for step in trace
            ]
        )
    return RefinementCurve(
        steps=np.array([step.step for step in trace]),
        elbo=elbo,
        kl=kl,
        log_evidence=log_evidence,
        points_seen=np.array([step.state.points_seen for step in trace]),
    )


def refinement_plot(guide, *args, ax=None, **kwargs):
    """Plot :func:`refinement_curve` (or a given :class:`RefinementCurve`): ELBO on the left
    axis, exact KL (log scale) on a second panel when available. Returns the ``Figure``."""
    import matplotlib.pyplot as plt

    curve = (
        guide if isinstance(guide, RefinementCurve) else refinement_curve(guide, *args, **kwargs)
    )
    panels = 2 if curve.kl is not None else 1
    if ax is None:
        fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(ax)
        fig = axes[0].figure
    axes[0].plot(curve.steps, curve.elbo, "o-", ms=3, label="ELBO (Monte Carlo)")
    if curve.log_evidence is not None:
        axes[0].axhline(curve.log_evidence, color="k", ls="--", lw=0.8, label="log p(D) (exact)")
    later = curve.elbo[1:]
    if len(later) > 1 and curve.elbo[0] < later.min() - 3 * (later.max() - later.min()):
        # λ_0 far below the refined states would flatten the curve: zoom on k ≥ 1
        top = max(later.max(), curve.log_evidence or later.max())
        margin = 0.1 * (top - later.min()) + 1e-3
        axes[0].set_ylim(later.min() - margin, top + margin)
        axes[0].annotate(
            f"λ_0: {curve.elbo[0]:.4g} (off scale)",
            (0.02, 0.04),
            xycoords="axes fraction",
            fontsize=8,
        )
    axes[0].set_xlabel("refinement step k")
    axes[0].set_ylabel("ELBO per dataset")
    axes[0].set_title("ELBO against refinement step")
    axes[0].legend(fontsize=8)
    if curve.kl is not None and len(axes) > 1:
        axes[1].semilogy(curve.steps, np.maximum(curve.kl, 1e-6), "o-", ms=3, color="C2")
        axes[1].set_xlabel("refinement step k")
        axes[1].set_ylabel("KL(q ‖ p(θ | D)) [nats]")
        axes[1].set_title(f"exact KL: {curve.kl[0]:.3g} → {curve.kl[-1]:.3g} nats")
    fig.tight_layout()
    return fig
