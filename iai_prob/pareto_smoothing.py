"""Pareto-smoothed importance sampling on plain arrays, shared by both backends.

``pareto_smooth(log_weights)`` fits a generalized Pareto distribution to the largest
importance weights of each column (Vehtari, Simpson, Gelman, Yao, Gabry 2024, through
ArviZ) and returns the smoothed, self-normalized log weights and the shape ``k̂`` per
column. The inference code (a posterior's own quality report) and
:mod:`iai_prob.diagnostics.psis` (the user-facing diagnostics) both use it, so neither
imports the other.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["FLAT", "pareto_smooth", "smooth_finite_columns"]


FLAT = 0.01
"""Log weights within this many nats of each other are equal weights: ``q`` is the
posterior to float precision (as for a conjugate model solved exactly)."""


def pareto_smooth(log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PSIS of ``(S, T)`` log weights: normalized smoothed log weights ``(S, T)`` and
    ``k̂`` ``(T,)``.

    A column of equal weights (range below :data:`FLAT` nats) leaves the Pareto fit
    degenerate (``k̂ = ±inf``): its weights are uniform and its ``k̂`` is 0.
    """
    log_weights = np.asarray(log_weights, dtype=float)
    flat = np.ptp(log_weights, axis=0) < FLAT
    smoothed = np.full(log_weights.shape, -np.log(log_weights.shape[0]))
    khat = np.zeros(log_weights.shape[1])
    if not flat.all():
        smoothed[:, ~flat], khat[~flat] = _fit(log_weights[:, ~flat])
    return smoothed, khat


def _fit(log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import arviz as az
    from scipy.special import logsumexp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz warns for every k̂ > 0.7; callers report it
        if hasattr(az, "psislw"):  # ArviZ 0.x: samples on the last axis
            smoothed, khat = az.psislw(log_weights.T)
        else:  # ArviZ ≥ 1.0 (untested here): arviz_stats takes the log-likelihood, −log w
            from arviz_stats.base import array_stats

            smoothed, khat = array_stats.psislw(-log_weights.T, axis=-1)
    smoothed = np.asarray(smoothed, dtype=float).T
    smoothed = smoothed - logsumexp(smoothed, axis=0, keepdims=True)
    return smoothed, np.atleast_1d(np.asarray(khat, dtype=float))


def smooth_finite_columns(log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pareto_smooth` of the columns ``(S, T)`` whose log weights are all finite;
    a column with a non-finite one (a draw whose log joint overflowed) gets ``k̂ = inf``
    and ``nan`` weights."""
    log_weights = np.asarray(log_weights, dtype=float)
    finite = np.isfinite(log_weights).all(0)
    khat = np.full(log_weights.shape[1], np.inf)
    smoothed = np.full(log_weights.shape, np.nan)
    if finite.any():
        smoothed[:, finite], khat[finite] = pareto_smooth(log_weights[:, finite])
    return smoothed, khat
