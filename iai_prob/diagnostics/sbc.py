"""Simulation-based calibration of an amortized posterior (Talts et al. 2018).

For ``m = 1..M``: draw ``θ_m ~ p(θ)``, ``D_m ~ p(D | θ_m)``, then ``L`` draws
``z_{m,l} ~ q(z | D_m)``, and record for every unconstrained coordinate ``j`` the rank

    r_{m,j} = #{ l : z_{m,l,j} < z_{m,j}^true } ∈ {0, …, L}.

If ``q(· | D) = p(· | D)`` for every ``D`` the ranks are uniform on ``{0, …, L}``
(self-consistency of Bayesian inference under the prior predictive). Over-confident
posteriors pile the ranks at both ends (∪-shaped histogram), under-confident ones in the
middle (∩), biased ones on one side. Amortization makes this cheap: all ``M`` posteriors
come from one batched call of the guide, where per-dataset MCMC or VI would need ``M``
runs.

Tests reported per coordinate:

* the ECDF difference ``F̂(k/(L+1)) − k/(L+1)`` of the ranks, with a simultaneous
  ``1 − α`` band for its maximum over ``k`` under uniformity, computed by simulating
  uniform ranks (a discrete Kolmogorov–Smirnov band; Säilynoja, Bürkner, Vehtari 2022 use
  the same ECDF-difference view); ``passed`` requires every coordinate inside the band at
  level ``α / P`` (Bonferroni over the ``P`` coordinates);
* a χ² test of the rank histogram (``B`` equal bins);
* coverage of central posterior intervals at nominal levels ``γ``;
* the posterior z-score ``(mean_q − z^true) / sd_q`` and contraction
  ``1 − var_q / var_prior`` (Schad, Betancourt, Vasishth 2021): calibrated posteriors
  have z-scores ~ N(0, 1) at any contraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from iai_prob.diagnostics.adapter import approximate_posterior, is_numpyro
from iai_prob.models.base import TaskFamily

__all__ = ["SBCResult", "ecdf_band", "ecdf_difference", "sbc"]


def ecdf_difference(ranks: np.ndarray, num_draws: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid ``k/(L+1)``, ``k = 1..L``, and ``F̂ − k/(L+1)`` per column of ``ranks`` ``(M, P)``.

    ``F̂(k/(L+1))`` is the share of ranks below ``k``; under uniform ranks on
    ``{0..L}`` its expectation is exactly ``k/(L+1)``.
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    counts = np.zeros((num_draws + 1, ranks.shape[1]))
    np.add.at(counts, (ranks, np.arange(ranks.shape[1])[None, :]), 1)
    below = counts.cumsum(0)[:-1] / ranks.shape[0]  # share of ranks < k, k = 1..L
    expected = np.arange(1, num_draws + 1) / (num_draws + 1)
    return expected, below - expected[:, None]


def ecdf_band(
    num_datasets: int, num_draws: int, alpha: float, *, simulations: int = 2000, seed: int = 0
) -> float:
    """Half-width ``b`` with ``P(max_k |F̂ − k/(L+1)| ≤ b) = 1 − α`` under uniform ranks."""
    generator = np.random.default_rng(seed)
    ranks = generator.integers(0, num_draws + 1, size=(num_datasets, simulations))
    _, difference = ecdf_difference(ranks, num_draws)
    return float(np.quantile(np.abs(difference).max(0), 1 - alpha))


@dataclass
class SBCResult:
    """Ranks and the calibration tests of :func:`sbc`.

    :ivar ranks: ``(M, P)`` ranks in ``{0..L}`` of the true unconstrained coordinates.
    :ivar num_draws: ``L``, posterior draws per dataset.
    :ivar labels: names of the ``P`` coordinates (``site[i]``).
    :ivar ecdf_max: ``(P,)`` maximum absolute ECDF difference per coordinate.
    :ivar band: simultaneous band half-width at level ``alpha / P``.
    :ivar chi2_pvalue: ``(P,)`` p-values of the χ² test of the rank histograms.
    :ivar coverage_levels: nominal central-interval levels ``(K,)``.
    :ivar coverage: ``(K, P)`` empirical coverage.
    :ivar z_scores: ``(M, P)`` posterior z-scores.
    :ivar contraction: ``(M, P)`` posterior contraction.
    :ivar khat: ``(M,)`` PSIS k̂ per dataset, when requested.
    """

    ranks: np.ndarray
    num_draws: int
    labels: list[str]
    alpha: float
    ecdf_max: np.ndarray
    band: float
    chi2_pvalue: np.ndarray
    coverage_levels: np.ndarray
    coverage: np.ndarray
    z_scores: np.ndarray
    contraction: np.ndarray
    khat: np.ndarray | None = None

    @property
    def passed(self) -> bool:
        """Every coordinate's ECDF difference inside the simultaneous band."""
        return bool((self.ecdf_max <= self.band).all())

    @property
    def flagged(self) -> list[str]:
        """Coordinates whose ranks leave the band."""
        return [label for label, m in zip(self.labels, self.ecdf_max, strict=True) if m > self.band]

    def summary(self) -> str:
        """One line: pass/fail, the worst coordinate, χ² and z-score spread."""
        worst = int(np.argmax(self.ecdf_max / self.band))
        text = (
            f"SBC {'passed' if self.passed else 'FAILED'} on {len(self.ranks)} datasets × "
            f"{self.num_draws} draws: max |ECDF − uniform| = {self.ecdf_max[worst]:.3f} "
            f"({self.labels[worst]}) vs band {self.band:.3f} (α = {self.alpha}, Bonferroni "
            f"over {len(self.labels)}); min χ² p = {self.chi2_pvalue.min():.3g}; "
            f"sd of z-scores {self.z_scores.std():.2f} (1 if calibrated)"
        )
        if self.khat is not None:
            text += f"; k̂ < 0.7 on {np.mean(self.khat < 0.7):.0%} of datasets"
        return text


def _labels(layout) -> list[str]:
    labels = []
    for site in layout.sites:
        if site.numel == 1:
            labels.append(site.name)
        else:
            labels += [f"{site.name}[{i}]" for i in range(site.numel)]
    return labels


@torch.no_grad()
def sbc(
    guide,
    family: TaskFamily,
    num_datasets: int,
    *,
    num_points: int = 64,
    num_draws: int = 99,
    alpha: float = 0.05,
    khat: bool = False,
    chunk: int = 256,
    bins: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> SBCResult:
    """Simulation-based calibration of ``guide`` on ``num_datasets`` simulated datasets.

    :param guide: an :class:`~iai_prob.inference.IterativeAmortizedGuide` or a callable
        ``(x, y) -> distribution`` over the unconstrained latents with batch ``(T,)``
        (e.g. ``family.exact_posterior`` for a conjugate family); for NumPyro, the pair
        ``(guide, params)`` or a callable returning a NumPyro distribution.
    :param TaskFamily family: simulates ``θ ~ p(θ)`` and ``D ~ p(D | θ)``: a
        :class:`~iai_prob.models.base.TaskFamily` (for a NumPyro guide, or a family bound
        with ``on("numpyro")``, simulated under NumPyro with ``jax.random.PRNGKey(seed)``).
    :param int num_datasets: ``M``.
    :param int num_points: ``N`` points per dataset.
    :param int num_draws: ``L`` posterior draws per dataset (ranks in ``0..L``).
    :param float alpha: family-wise level of the ECDF test.
    :param bool khat: also compute PSIS k̂ per dataset (from ``max(L, 200)`` draws).
    :param int chunk: datasets per batched guide call.
    """
    from scipy import stats

    from iai_prob.diagnostics.psis import psis_khat

    numpyro = is_numpyro(guide, family)
    if not (numpyro or isinstance(family, TaskFamily)):
        raise ValueError(
            f"family must be a TaskFamily (Pyro or NumPyro), got {type(family).__name__}"
        )
    for name, value in (("num_datasets", num_datasets), ("num_draws", num_draws)):
        if int(value) != value or value < 2:
            raise ValueError(f"{name} must be an integer ≥ 2, got {value!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if numpyro:
        from iai_prob.diagnostics.numpyro_adapter import simulate

        theta, x, y = simulate(family, num_datasets, num_points, seed=seed)
        prior_theta, _, _ = simulate(family, 4096, 1, seed=seed + 1)
    else:
        generator = torch.Generator().manual_seed(seed)
        theta, x, y = family.sample(num_datasets, num_points, generator=generator)
        prior_theta, _, _ = family.sample(4096, 1, generator=generator)
    ranks, means, sds, khats, layout = [], [], [], [], None
    starts = range(0, num_datasets, chunk)
    for start in tqdm(starts, desc="SBC", disable=not progress, leave=False):
        index = slice(start, start + chunk)
        source = approximate_posterior(guide, family, x[index], y[index])
        layout = source.layout
        true_z = np.asarray(layout.pack({k: v[index] for k, v in theta.items()}, batch_ndim=1))
        z = np.asarray(source.sample_latent(num_draws, seed=seed + start + 1))  # (L, T, D)
        ranks.append((z < true_z).sum(0))
        mean, sd = source.moments()
        means.append(np.asarray(mean))
        sds.append(np.asarray(sd))
        if khat:
            draws = source.draw(max(int(num_draws), 200), seed=seed + start + 2)
            khats.append(psis_khat(draws.log_weights))
    ranks = np.concatenate(ranks)
    true_z = np.asarray(layout.pack(theta, batch_ndim=1))
    sds = np.concatenate(sds)
    z_scores = (np.concatenate(means) - true_z) / sds
    prior_var = np.asarray(layout.pack(prior_theta, batch_ndim=1)).var(0, ddof=1)
    contraction = 1 - sds**2 / prior_var

    num_coordinates = ranks.shape[1]
    _, difference = ecdf_difference(ranks, num_draws)
    band = ecdf_band(num_datasets, num_draws, alpha / num_coordinates, seed=seed)
    edges = np.linspace(0, num_draws + 1, min(bins, num_draws + 1) + 1)
    counts = np.stack([np.histogram(ranks[:, j], bins=edges)[0] for j in range(num_coordinates)])
    expected = num_datasets * np.diff(edges) / (num_draws + 1)
    chi2_pvalue = np.array(
        [stats.chisquare(c, expected * c.sum() / expected.sum()).pvalue for c in counts]
    )
    levels = np.linspace(0.05, 0.95, 19)
    fraction = (ranks + 0.5) / (num_draws + 1)
    coverage = (np.abs(fraction[None] - 0.5) <= levels[:, None, None] / 2).mean(1)
    return SBCResult(
        ranks=ranks,
        num_draws=int(num_draws),
        labels=_labels(layout),
        alpha=alpha,
        ecdf_max=np.abs(difference).max(0),
        band=band,
        chi2_pvalue=chi2_pvalue,
        coverage_levels=levels,
        coverage=coverage,
        z_scores=z_scores,
        contraction=contraction,
        khat=np.concatenate(khats) if khat else None,
    )
