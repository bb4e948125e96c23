"""Figures of the diagnostics: SBC ranks, coverage, z-scores, PSIS k̂, guide-vs-NUTS pairs.

Every function draws on a given matplotlib ``Axes`` (or array of them) when passed one,
else creates a figure, and returns the ``Figure``. Reading guide:

* SBC ECDF difference: a calibrated posterior stays inside the grey band; above zero at
  low ranks and below at high ranks is over-confidence (ranks piled at both ends), the
  mirror image under-confidence, a one-signed excursion bias;
* rank histograms: flat within the grey 99 % binomial band when calibrated;
* coverage: empirical vs nominal central-interval coverage, on the diagonal when
  calibrated, below it when over-confident;
* z-score vs contraction: calibrated posteriors have |z| mostly below 2 at any contraction;
  large |z| at high contraction is over-fitting/over-confidence;
* k̂: the share of datasets under 0.5 / 0.7 (Yao et al. 2018).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "plot_coverage",
    "plot_khat",
    "plot_nuts_pairs",
    "plot_rank_histograms",
    "plot_sbc_ecdf",
    "plot_z_contraction",
]


def _axes(ax, **figure):
    if ax is None:
        fig, ax = plt.subplots(**figure)
        return fig, ax
    first = np.ravel(ax)[0] if isinstance(ax, np.ndarray) else ax
    return first.figure, ax


def plot_sbc_ecdf(result, ax=None):
    """ECDF difference ``F̂ − uniform`` of the SBC ranks per coordinate, with the band."""
    from iai_prob.diagnostics.sbc import ecdf_difference

    fig, ax = _axes(ax, figsize=(6, 4))
    grid, difference = ecdf_difference(result.ranks, result.num_draws)
    ax.fill_between(grid, -result.band, result.band, color="0.85", label="simultaneous band")
    for j, label in enumerate(result.labels):
        ax.plot(grid, difference[:, j], lw=1.2, label=label)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("fractional rank")
    ax.set_ylabel("ECDF − uniform")
    verdict = "passed" if result.passed else "FAILED"
    ax.set_title(f"SBC ECDF difference ({verdict})")
    if len(result.labels) <= 10:
        ax.legend(fontsize=7, ncol=2)
    return fig


def plot_rank_histograms(result, axes=None, *, bins: int = 20):
    """One rank histogram per coordinate with a 99 % band for the count per bin."""
    from scipy import stats

    count = len(result.labels)
    columns = min(count, 4)
    rows = math.ceil(count / columns)
    if axes is None:
        fig, axes = plt.subplots(
            rows, columns, figsize=(2.6 * columns, 2.0 * rows), squeeze=False, sharey=True
        )
    else:
        fig = np.ravel(axes)[0].figure
    edges = np.linspace(0, result.num_draws + 1, min(bins, result.num_draws + 1) + 1)
    probability = np.diff(edges).mean() / (result.num_draws + 1)
    total = len(result.ranks)
    low, high = stats.binom.ppf([0.005, 0.995], total, probability)
    for j, ax in enumerate(np.ravel(axes)):
        if j >= count:
            ax.axis("off")
            continue
        ax.axhspan(low, high, color="0.85")
        ax.hist(result.ranks[:, j], bins=edges, color="C0")
        ax.set_title(result.labels[j], fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("SBC rank histograms (grey: 99 % band)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_coverage(result, ax=None):
    """Empirical vs nominal coverage of central posterior intervals, per coordinate."""
    fig, ax = _axes(ax, figsize=(4.5, 4))
    levels = result.coverage_levels
    total = len(result.ranks)
    spread = 2.58 * np.sqrt(levels * (1 - levels) / total)
    ax.fill_between(levels, levels - spread, levels + spread, color="0.85", label="99 % band")
    ax.plot([0, 1], [0, 1], "k", lw=0.6)
    for j, label in enumerate(result.labels):
        ax.plot(levels, result.coverage[:, j], lw=1, label=label)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage")
    ax.set_title("Central-interval coverage")
    return fig


def plot_z_contraction(result, ax=None):
    """Posterior z-score against contraction, every dataset and coordinate."""
    fig, ax = _axes(ax, figsize=(4.5, 4))
    for j, label in enumerate(result.labels):
        ax.scatter(result.contraction[:, j], result.z_scores[:, j], s=4, alpha=0.5, label=label)
    for level in (-2, 2):
        ax.axhline(level, color="0.5", ls="--", lw=0.8)
    ax.set_xlabel("posterior contraction 1 − var_q / var_prior")
    ax.set_ylabel("posterior z-score")
    ax.set_title("z-score vs contraction")
    return fig


def plot_khat(khat, ax=None):
    """Histogram of PSIS k̂ over datasets with the 0.5 and 0.7 thresholds."""
    fig, ax = _axes(ax, figsize=(5, 3.5))
    khat = np.atleast_1d(np.asarray(khat, dtype=float))
    ax.hist(khat, bins=max(10, min(40, len(khat) // 3)), color="C0")
    for level, name in ((0.5, "0.5 good"), (0.7, "0.7 unreliable")):
        ax.axvline(level, color="C3" if level == 0.7 else "C1", ls="--", label=name)
    share = np.mean(khat < 0.7)
    ax.set_title(f"PSIS k̂ over {len(khat)} dataset(s): {share:.0%} below 0.7")
    ax.set_xlabel("k̂")
    ax.legend(fontsize=8)
    return fig


def plot_nuts_pairs(comparison, *, max_coordinates: int = 4, max_points: int = 500):
    """Guide (blue) and NUTS (orange) draws overlaid: marginals on the diagonal, pairs below."""
    count = min(max_coordinates, len(comparison.labels))
    fig, axes = plt.subplots(count, count, figsize=(3 * count, 3 * count), squeeze=False)
    guide = comparison.guide_draws[:max_points]
    nuts = comparison.nuts_draws[:max_points]
    for i in range(count):
        for j in range(count):
            ax = axes[i, j]
            ax.tick_params(labelsize=6)
            if j > i:
                ax.axis("off")
            elif i == j:
                ax.hist(comparison.nuts_draws[:, i], bins=30, density=True, alpha=0.5, color="C1")
                ax.hist(comparison.guide_draws[:, i], bins=30, density=True, alpha=0.5, color="C0")
            else:
                ax.scatter(nuts[:, j], nuts[:, i], s=2, alpha=0.4, color="C1")
                ax.scatter(guide[:, j], guide[:, i], s=2, alpha=0.4, color="C0")
            if i == count - 1:
                ax.set_xlabel(comparison.labels[j], fontsize=8)
            if j == 0 and i > 0:
                ax.set_ylabel(comparison.labels[i], fontsize=8)
    c2st = "" if comparison.c2st is None else f", C2ST accuracy {comparison.c2st:.2f}"
    fig.suptitle(f"guide (blue) vs NUTS (orange){c2st}", fontsize=10)
    fig.tight_layout()
    return fig
