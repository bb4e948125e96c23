"""The guide's start standardized by the prior: what the initial head's zeros mean.

The refinement's learned steps are natural-gradient (CVI) steps, and the features that
set their sizes are scale-free (:func:`~iai_prob.inference.updates.step_context`): an
affine change of the unconstrained coordinates ``z = m + s ⊙ u`` leaves every step the
same. The one place where the coordinates' units enter is the start ``λ_0``: the initial
head's outputs ``(μ_raw, Λ_raw)`` are zero at initialization, and zeros used to mean
``N(0, I)`` in ``z`` whatever the model's units. With coefficients under a ``N(0, 0.5²)``
prior on raw covariates of size 8, draws of ``N(0, I)`` put a Poisson rate at ``e^40`` and
past float32's ``exp`` (the randhie models of ``benchmarks/real_models``: every training
step was skipped); under a ``N(0, 100²)`` prior the same start is 100 times too narrow.

A standardized guide reads the head's outputs in prior units instead,

    μ_0 = m + s ⊙ μ_raw,     Λ_0 = S⁻¹ Λ_raw S⁻¹,     S = diag(s),

with ``m`` and ``s`` the prior's location and scale in ``z``: a site on the real line
whose prior has a finite mean and standard deviation (a normal prior, say) gives them
exactly; any other site gives, per coordinate, the median and ``1.4826 ×`` the median
absolute deviation of :data:`PRIOR_DRAWS` seeded draws of its prior mapped to ``z`` by
its bijection (a heavy-tailed prior such as a half-Cauchy scale still gets finite values;
a coordinate whose draws do not spread gets ``s = 1``). Zeros now mean the prior's own
Gaussian approximation, so an untrained guide starts where the model says the latents
are, in any units (DESIGN.md, "Converged wherever it starts": a parametrization
standardized by the prior). The moments and draws are those of each site's distribution
in one trace, so a hierarchical site's spread is the one given its parents' values there.
``S⁻¹ Λ S⁻¹`` keeps a diagonal, low-rank or full-rank precision in its family.

The data side: a standardized guide's encoders read ``asinh(h)`` of the per-datum
features ``h`` (linear within ``|h| < 1``, logarithmic beyond), so raw counts of 10⁷ or
incomes of 10⁵ reach the first layer as numbers near 16 or 12 rather than saturating it.

Checkpoint cards written before this option existed record neither, and load with
``standardize=False`` (:func:`~iai_prob.guide_card.build_from_card`), the start they were
trained with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = ["PRIOR_DRAWS", "PRIOR_SEED", "SitePrior", "prior_location_scale", "site_prior"]

PRIOR_DRAWS = 2048
"""Draws of each site's prior that the location and scale are estimated from."""

PRIOR_SEED = 0
"""The seed of those draws, so that the same model gives the same guide."""

_MAD_TO_SD = 1.4826  # the MAD of a normal distribution is 0.6745 sd


class SitePrior(NamedTuple):
    """What a backend reads off one global site's prior, in the unconstrained space (any
    leading shape, tasks included, then the site's unconstrained shape).

    :ivar mean: the exact mean, or ``None`` (a constrained site, or no finite mean).
    :ivar stddev: the exact standard deviation, or ``None``, as ``mean``.
    :ivar draws: seeded draws, given where the exact moments are not.
    """

    mean: np.ndarray | None = None
    stddev: np.ndarray | None = None
    draws: np.ndarray | None = None


def site_prior(site, moments: Callable, draws: Callable) -> SitePrior:
    """A global ``site``'s :class:`SitePrior`: ``moments() -> (mean, stddev)`` (NumPy; may
    raise ``NotImplementedError``) where the site is real-supported and they are finite
    with ``stddev > 0``, else ``draws()``, its prior's draws in the unconstrained space."""
    if site.is_real:
        try:
            mean, stddev = moments()
        except NotImplementedError:
            pass
        else:
            if np.isfinite(mean).all() and np.isfinite(stddev).all() and (stddev > 0).all():
                return SitePrior(mean=mean, stddev=stddev)
    return SitePrior(draws=draws())


def prior_location_scale(layout, priors: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(m, s)``, each ``(D,)`` in the layout's order, from ``{site: SitePrior}`` of every
    global site (leading axes, draws and tasks, are pooled).

    :raises ValueError: naming a site whose draws are all NaN or inf.
    """
    locations, scales = [], []
    for site in layout.sites:
        prior = priors[site.name]
        if prior.mean is not None:
            mean = np.broadcast_to(prior.mean, np.shape(prior.stddev))
            locations.append(np.median(mean.reshape(-1, site.numel), axis=0))
            scales.append(np.median(np.reshape(prior.stddev, (-1, site.numel)), axis=0))
            continue
        draws = np.asarray(prior.draws, dtype=np.float64).reshape(-1, site.numel)
        draws = draws[np.isfinite(draws).all(axis=1)]
        if len(draws) == 0:
            raise ValueError(
                f"every draw of the prior of site {site.name!r} is NaN or inf in the "
                "unconstrained space; check its prior's parameters"
            )
        location = np.median(draws, axis=0)
        scale = _MAD_TO_SD * np.median(np.abs(draws - location), axis=0)
        scales.append(np.where(np.isfinite(scale) & (scale > 0), scale, 1.0))
        locations.append(location)
    return np.concatenate(locations), np.concatenate(scales)
