"""Pareto-smoothed importance sampling on plain arrays, shared by both backends.

``pareto_smooth(log_weights)`` fits a generalized Pareto distribution to the largest
importance weights of each column (Vehtari, Simpson, Gelman, Yao, Gabry 2024) and
returns the smoothed, self-normalized log weights and the shape ``k̂`` per column: every
column at once in NumPy, equal to ArviZ's ``psislw`` (which fits one column at a time in
Python), with ArviZ itself for the columns the vectorized fit cannot take. The inference
code (a posterior's own quality report) and :mod:`iai_prob.diagnostics.psis` (the
user-facing diagnostics) both use it, so neither imports the other.
"""

from __future__ import annotations

import math
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
    """Smoothed normalized log weights and ``k̂`` of every column, all at once
    (:func:`_fit_columns`); a column it cannot take (tied or underflowing tail values, a
    failed fit) goes through ArviZ's ``psislw`` (:func:`_fit_arviz`), which
    :func:`_fit_columns` equals on every other column (``tests/test_pareto_smoothing.py``)."""
    smoothed, khat, regular = _fit_columns(log_weights)
    if not regular.all():
        smoothed[:, ~regular], khat[~regular] = _fit_arviz(log_weights[:, ~regular])
    return smoothed, khat


def _tail_length(num_draws: int) -> int:
    """``M = ⌈min(S/5, 3 √S)⌉`` largest weights in the Pareto fit (relative efficiency 1)."""
    return math.ceil(min(0.2 * num_draws, 3.0 * math.sqrt(num_draws)))


def _fit_columns(log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSIS of ``(S, T)`` log weights, vectorized over columns (ArviZ's ``psislw`` loops
    in Python, about half a millisecond a column: half a second for a thousand groups).

    For each column, shifted to a maximum of 0: the ``M`` (:func:`_tail_length`) largest
    ``x`` above the cutoff ``c`` (the ``M+1``-th largest) are replaced by
    ``log(c' + F⁻¹((i − ½)/M))``, ``c' = e^c``, ``F`` the generalized Pareto distribution
    fitted to ``e^x − c'`` (:func:`_generalized_pareto_fit`), capped at 0, and the column
    is normalized. Also returns which columns were regular: a tail of ``M`` distinct
    values, a cutoff above float underflow, a finite fit with ``σ > 0``; the others are
    left to ArviZ."""
    num_draws = log_weights.shape[0]
    tail = _tail_length(num_draws)
    rows = np.ascontiguousarray(log_weights.T)  # (T, S): one column a row
    shifted = rows - rows.max(1, keepdims=True)
    khat = np.full(rows.shape[0], np.inf)
    if tail <= 4:  # too few draws for a Pareto fit
        return shifted.T, khat, np.zeros(rows.shape[0], dtype=bool)
    largest = np.argpartition(shifted, num_draws - tail - 1, axis=1)[:, num_draws - tail - 1 :]
    values = np.take_along_axis(shifted, largest, 1)
    ascending = np.argsort(values, axis=1)
    largest, values = (np.take_along_axis(a, ascending, 1) for a in (largest, values))
    cutoff, tail_values = values[:, 0], values[:, 1:]
    regular = (
        (np.diff(values, axis=1) > 0).all(1)  # M distinct values above the cutoff
        & (cutoff >= np.log(np.finfo(float).tiny))
    )
    cutoff_weight = np.exp(cutoff[regular, None])
    shape, scale = _generalized_pareto_fit(np.exp(tail_values[regular]) - cutoff_weight)
    fitted = np.isfinite(shape) & (scale > 0)
    regular[np.flatnonzero(regular)[~fitted]] = False
    probabilities = (np.arange(tail) + 0.5) / tail
    quantiles = _generalized_pareto_quantile(probabilities, shape[fitted], scale[fitted])
    smoothed = np.minimum(np.log(quantiles + cutoff_weight[fitted]), 0.0)
    smoothed_rows = shifted[regular]
    np.put_along_axis(smoothed_rows, largest[regular, 1:], smoothed, 1)
    shifted[regular] = smoothed_rows - _log_sum_exp(smoothed_rows)
    khat[regular] = shape[fitted]
    return shifted.T, khat, regular


def _generalized_pareto_fit(excess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shape ``k`` and scale ``σ`` of a generalized Pareto distribution per row of
    ascending positive ``excess`` ``(T, n)``: the empirical-Bayes estimate of Zhang and
    Stephens (2009) over ``m = 30 + ⌊√n⌋`` grid points ``θ_j`` (quasi-posterior weights
    ``w_j ∝ exp(n ℓ(θ_j))``, negligible ones dropped; ``k = mean log(1 − θ̄ x)``,
    ``σ = −k/θ̄``), with ``k`` then shrunk towards ½ by a weak prior worth 10 draws, as
    in Vehtari et al. (2024, appendix C) and ArviZ."""
    n = excess.shape[1]
    grid = 30 + int(math.sqrt(n))
    quartile = excess[:, int(n / 4 + 0.5) - 1, None]
    steps = 1.0 - np.sqrt(grid / (np.arange(1, grid + 1) - 0.5))
    theta = steps / (3.0 * quartile) + 1.0 / excess[:, -1:]  # (T, m)
    shape_at = np.log1p(-theta[:, :, None] * excess[:, None, :]).mean(2)  # (T, m)
    profile = n * (np.log(-theta / shape_at) - shape_at - 1.0)
    weights = 1.0 / np.exp(profile[:, None, :] - profile[:, :, None]).sum(2)
    weights = np.where(weights >= 10 * np.finfo(float).eps, weights, 0.0)
    theta_mean = (theta * weights).sum(1, keepdims=True) / weights.sum(1, keepdims=True)
    shape = np.log1p(-theta_mean * excess).mean(1)
    scale = -shape / theta_mean[:, 0]
    return (n * shape + 10 * 0.5) / (n + 10), scale


def _generalized_pareto_quantile(
    probabilities: np.ndarray, shape: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """``F⁻¹(p) = σ ((1 − p)^(−k) − 1) / k`` (``−σ log(1 − p)`` at ``k = 0``), ``(T, n)``
    for probabilities ``(n,)`` and one ``k``, ``σ`` per row."""
    shape, scale = shape[:, None], scale[:, None]
    near_zero = np.abs(shape) < np.finfo(float).eps
    safe = np.where(near_zero, 1.0, shape)
    pareto = np.expm1(-safe * np.log1p(-probabilities)) / safe
    return scale * np.where(near_zero, -np.log1p(-probabilities), pareto)


def _log_sum_exp(rows: np.ndarray) -> np.ndarray:
    """``log Σ_s exp(x_s)`` of each row with a finite maximum, ``(T, 1)``."""
    top = rows.max(1, keepdims=True)
    return top + np.log(np.exp(rows - top).sum(1, keepdims=True))


def _fit_arviz(log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ArviZ's ``psislw`` column by column, normalized."""
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
