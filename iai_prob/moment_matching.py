"""PSIS moment matching: the Gaussian answer corrected where its ``k̂`` says it can be.

The convergence phase ends at the Gaussian VI optimum, ``argmin_q KL(q ‖ p)``, which
is mode-seeking: where the posterior has heavier tails or skew than a Gaussian, its
spread is too small (the robust Student-t regression of the real-model suite: sds
0.79–0.96 of NUTS's, C2ST 0.57 against NUTS). The PSIS check of the answer already
draws ``z_s ~ q`` and weighs them by ``w_s ∝ p(z_s, D) / q(z_s)``, Pareto-smoothed
(Vehtari, Simpson, Gelman, Yao, Gabry 2024); where those weights are reliable but ``q``
is not close, ``0.5 < k̂ ≤ 0.7`` (Yao, Vehtari, Simpson, Gelman 2018), the weighted
moments

    μ̃ = Σ_s w_s z_s,      Σ̃ = Σ_s w_s (z_s − μ̃)(z_s − μ̃)ᵀ

estimate the posterior's mean and covariance, and ``N(μ̃, Σ̃)`` is the Gaussian that
minimizes ``KL(p ‖ q)``, the moment-matching step of adaptive importance sampling
(Paananen, Piironen, Bürkner, Vehtari 2021). Below 0.5 the VI answer is already close;
above 0.7 the weights' variance is unreliable and the answer is left as it is, with its
warning.

The moments carry Monte Carlo error: fitted from ``n`` effective draws
(``ESS = 1 / Σ w_s²``) of a posterior whose moments ``q`` already has, ``2n KL(N(μ̃, Σ̃) ‖ q)``
is about ``χ²_p`` with ``p = D + D(D + 1)/2`` parameters. A correction is therefore
taken only where ``KL(N(μ̃, Σ̃) ‖ q) > p / ESS``, twice its expected value under that
null (a false move in about 0.1–4 % of datasets for ``D`` from 6 down to 3): a
logistic regression on 40 points (``k̂ = 0.59``, ``D = 3``), whose VI optimum is 0.0013
nats from the posterior's moments (40,000 draws), keeps it: its 1,000-draw moments are
0.0081 nats away, within ``p / ESS = 0.0093``. Measured on the real-model suite: the Student-t
regression ``KL = 0.051 > 0.037`` (ESS 728, ``D = 6``) is corrected and its C2ST against
NUTS falls from 0.57 to 0.54 (NUTS's own moments give 0.54, the best a Gaussian does
there); the breast-cancer logistic regression ``KL = 0.010 < 0.014`` keeps its VI
optimum. A moved answer gets a ``k̂`` of its own (1,000 more draws, for those tasks'
batches only) and is kept only where that is at most 0.7: the answer's status is then
that ``k̂``, and an answer the check cannot vouch for stays the VI optimum with its own.

Backend-neutral (NumPy): each backend passes the draws and smoothed log weights of the
tasks in the band (:func:`~iai_prob.posterior_status.in_notice_band`) and turns the
moments back into its state (``Convergence(moment_match=False)`` keeps the VI optimum).
"""

from __future__ import annotations

import numpy as np

from iai_prob.posterior_status import KHAT_LIMIT

__all__ = ["moment_matched", "psis_moments", "vouched"]


def psis_moments(
    draws: np.ndarray, log_weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weighted mean ``(T, D)``, covariance ``(T, D, D)`` and effective sample size
    ``1 / Σ_s w_s²`` ``(T,)`` of ``draws`` ``(S, T, D)`` under the log weights ``(S, T)``
    (PSIS-smoothed; normalized here)."""
    weights = np.exp(log_weights - log_weights.max(0))
    weights = weights / weights.sum(0)
    mean = np.einsum("st,std->td", weights, draws)
    centred = draws - mean
    covariance = np.einsum("st,std,ste->tde", weights, centred, centred)
    ess = 1.0 / (weights**2).sum(0)
    return mean, 0.5 * (covariance + covariance.transpose(0, 2, 1)), ess


def moment_matched(
    loc: np.ndarray,
    precision: np.ndarray,
    draws: np.ndarray,
    log_weights: np.ndarray,
    tasks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(loc, precision, moved)`` ``(T, D)``, ``(T, D, D)``, ``(T,)``: each task in
    ``tasks`` ``(T,)`` answered by ``N(μ̃, Σ̃)`` of its draws ``(S, T, D)`` and smoothed log
    weights ``(S, T)`` where that differs from its ``N(loc, precision⁻¹)`` by more than
    the moments' Monte Carlo error (module docstring); a task whose ``Σ̃`` is not positive
    definite keeps its own answer. The caller checks each moved answer's own ``k̂`` and
    keeps it only where that is at most 0.7."""
    loc, precision = np.array(loc, dtype=float), np.array(precision, dtype=float)
    moved = np.zeros(loc.shape[0], dtype=bool)
    chosen = np.flatnonzero(tasks)
    if not len(chosen):
        return loc, precision, moved
    mean, covariance, ess = psis_moments(draws[:, chosen], log_weights[:, chosen])
    dim = loc.shape[-1]
    for position, task in enumerate(chosen):
        try:
            factor = np.linalg.cholesky(covariance[position])
        except np.linalg.LinAlgError:
            continue
        gap = _gaussian_kl(mean[position], covariance[position], loc[task], precision[task])
        if gap > (dim + dim * (dim + 1) / 2) / ess[position]:
            inverse = np.linalg.inv(factor)
            loc[task], precision[task] = mean[position], inverse.T @ inverse
            moved[task] = True
    return loc, precision, moved


def vouched(answer, matched, khat_of):
    """``answer`` ``(loc, precision, k̂)`` with the moved answers of ``matched``
    ``(loc, precision, moved)`` (:func:`moment_matched`) taken where their own ``k̂``,
    ``khat_of(loc, precision)`` (NumPy in and out, the backend's check), is at most 0.7,
    and that ``k̂`` then the answer's; elsewhere the VI optimum and its ``k̂`` stay."""
    loc, precision, khat = answer
    moved_loc, moved_precision, moved = matched
    if not moved.any():
        return answer
    moved_khat = np.asarray(khat_of(moved_loc, moved_precision))
    keep = moved & (moved_khat <= KHAT_LIMIT)
    return (
        np.where(keep[:, None], moved_loc, loc),
        np.where(keep[:, None, None], moved_precision, precision),
        np.where(keep, moved_khat, khat),
    )


def _gaussian_kl(mean, covariance, loc, precision) -> float:
    """``KL(N(mean, covariance) ‖ N(loc, precision⁻¹))``."""
    product = precision @ covariance
    offset = loc - mean
    _, log_det = np.linalg.slogdet(product)
    return 0.5 * float(np.trace(product) + offset @ precision @ offset - len(mean) - log_det)
