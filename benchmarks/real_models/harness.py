"""One suite model against NUTS: the trained guide, the NUTS reference and floor, Laplace.

For every dataset of a model (one, or one per group):

* the guide: ``guide.posterior(x, y)`` at its defaults, timed (median of a few calls after
  an untimed ``guide.precompile`` per data shape, as NUTS is compiled once per shape);
  for a model of several groups also every group of a size in one call, as
  ``iai infer --group`` answers them;
  ``passes`` and ``converged`` are read from the result's ``status`` when the guide
  reports one; ``k̂`` is PSIS's on the log
  importance weights ``log p(z, D) − log q(z)`` of the guide's draws;
* NumPyro NUTS (one chain, compiled once per data shape, compile time not counted):
  ``1 + floor_seeds`` runs with their own seeds, the reference chains; their C2ST against
  each other (every pair) is the floor a perfect approximation would score;
* the Laplace baseline (:mod:`.laplace`).

All draws are compared in the guide's flat unconstrained coordinates (each site through
``torch.distributions.biject_to`` of its support, in the guide's site order), where the
guide's family is Gaussian: C2ST (:func:`~iai_prob.diagnostics.compare.c2st_accuracy`)
against every reference chain (1,000 + 1,000 draws each: one reference chain moves the
score by about 0.02, so one chain's score is not a verdict), ``max_j |mean_q − mean_ref| /
sd_ref`` and the range of ``sd_q / sd_ref`` against the reference chains pooled. "C2ST
after PSIS" resamples the guide's draws with their Pareto-smoothed importance weights.
"Moment-matched Gaussian" is what the Gaussian family can reach at best: for each
reference chain, draws of the Gaussian with the mean and covariance of the other chains
pooled, scored against it; a score above the target says that no Gaussian passes it
(heavy tails, skew), and then the target asks for the ``k̂`` flag and the resampled draws.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from iai_prob.diagnostics import NutsReference, c2st_accuracy, psis_khat
from iai_prob.diagnostics.adapter import log_joint_per_draw
from iai_prob.diagnostics.psis import smoothed_log_weights

from .laplace import LaplaceBaseline
from .models import Dataset, RealDesign, RealModel, numpyro_model

__all__ = ["DatasetResult", "ModelResult", "Settings", "run_model", "train_guide"]

HELD_OUT_SEED = 1_000_000_000
"""Base seed of the NUTS chains and of the draws (far above the training seeds)."""


@dataclass(frozen=True)
class Settings:
    """Sizes of a run."""

    steps: int = 1000
    num_warmup: int = 500
    num_samples: int = 1000
    num_draws: int = 1000
    floor_seeds: int = 3
    guide_repeats: int = 3
    laplace_repeats: int = 5
    max_groups: int | None = None
    seed: int = 0
    progress: bool = True


@dataclass
class DatasetResult:
    """The metrics of one dataset (C2ST: 0.5 = indistinguishable from the NUTS reference;
    the guide's, Laplace's and the resampled draws' C2ST against each reference chain, the
    floor's for every pair of reference chains)."""

    name: str
    num_points: int
    num_params: int
    c2st_guide: list[float]
    c2st_floor: list[float]
    c2st_laplace: list[float]
    c2st_resampled: list[float]
    c2st_gaussian: list[float]
    mean_error: float
    sd_ratio: tuple[float, float]
    khat: float
    passes: float | None
    converged: bool | None
    guide_seconds: float
    nuts_seconds: float
    laplace_seconds: float
    laplace_iterations: int


@dataclass
class ModelResult:
    """A model's datasets, or why it could not run. ``grouped_seconds``: for a model of
    several datasets (groups), the guide's seconds per group when every group of a size is
    answered in one call, as ``iai infer --group`` does (``None`` for one dataset)."""

    entry: RealModel
    datasets: list[DatasetResult] = field(default_factory=list)
    error: str | None = None
    grouped_seconds: float | None = None
    guide_compile_seconds: float = 0.0
    nuts_compile_seconds: float = 0.0
    laplace_compile_seconds: float = 0.0
    train_seconds: float = 0.0


def _tensor(value: np.ndarray) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.get_default_dtype())  # a copy: frames are read-only


def train_guide(entry: RealModel, design: RealDesign, settings: Settings, cache: Path):
    """The default guide for ``entry``, trained by ``fit`` at its defaults on the model's
    prior predictive with covariates resampled from the real design; the training folder
    under ``cache`` (named by model, design, steps and seed) makes a rerun load it."""
    from iai_prob.inference import IterativeAmortizedGuide, PriorPredictiveTasks, fit

    guide = IterativeAmortizedGuide(entry.model, family="full_rank", batch_size=64)
    folder = (
        cache / f"{entry.name}-{design.digest()}" / f"steps{settings.steps}-seed{settings.seed}"
    )
    result = fit(
        guide,
        PriorPredictiveTasks(entry.model, design),
        steps=settings.steps,
        checkpoint_dir=folder,
        seed=settings.seed,
        progress=settings.progress,
    )
    return guide, result.seconds


def _unconstrained(layout, draws: dict[str, np.ndarray]) -> np.ndarray:
    """Constrained draws ``{site: (S, …)}`` → the guide's flat unconstrained ``(S, D)``."""
    values = {k: torch.tensor(np.asarray(v), dtype=torch.float64) for k, v in draws.items()}
    return layout.pack(values, batch_ndim=1).numpy()


def _moments(draws: np.ndarray, reference: np.ndarray) -> tuple[float, tuple[float, float]]:
    """``max_j |mean − mean_ref| / sd_ref`` and ``(min_j, max_j)`` of ``sd / sd_ref``."""
    sd = reference.std(0)
    error = float(np.max(np.abs(draws.mean(0) - reference.mean(0)) / sd))
    ratio = draws.std(0) / sd
    return error, (float(ratio.min()), float(ratio.max()))


@torch.no_grad()
def _guide_side(guide, x: torch.Tensor, y: torch.Tensor, settings: Settings, seed: int):
    """Timed posterior, its status, draws ``(S, D)`` and log importance weights ``(S,)``."""
    seconds, posterior = _timed_posterior(guide, x, y, settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = posterior.sample((settings.num_draws,))
    task = guide.prepare(x, y)
    log_weights = log_joint_per_draw(task, z[:, None, :])[:, 0] - posterior.log_prob(z)
    status = getattr(posterior, "status", None)
    return seconds, status, z.double().numpy(), log_weights.double().numpy(), task


def _reported(status, name: str, kind):
    """The field ``name`` of the guide's result status as ``kind``, ``None`` if absent."""
    value = getattr(status, name, None)
    return None if value is None else kind(value)


def _resampled(draws: np.ndarray, log_weights: np.ndarray, seed: int) -> np.ndarray:
    """The draws resampled with replacement by their Pareto-smoothed importance weights."""
    smoothed, _ = smoothed_log_weights(log_weights)
    probabilities = np.exp(smoothed[:, 0])
    index = np.random.default_rng(seed).choice(
        len(draws), len(draws), p=probabilities / probabilities.sum()
    )
    return draws[index]


def _against(draws: np.ndarray, chains: list[np.ndarray]) -> list[float]:
    """C2ST of ``draws`` against each reference chain."""
    return [c2st_accuracy(draws, chain) for chain in chains]


def _moment_matched(chains: list[np.ndarray], num_draws: int, seed: int) -> list[float]:
    """C2ST against each chain of the Gaussian with the mean and covariance of the other
    chains pooled (``num_draws`` seeded draws)."""
    rng = np.random.default_rng(seed)
    scores = []
    for index, chain in enumerate(chains):
        others = np.concatenate([c for i, c in enumerate(chains) if i != index])
        covariance = np.atleast_2d(np.cov(others, rowvar=False))
        draws = rng.multivariate_normal(others.mean(0), covariance, size=num_draws)
        scores.append(c2st_accuracy(draws, chain))
    return scores


def run_dataset(
    guide, dataset: Dataset, nuts: NutsReference, laplace, settings: Settings, seed: int
) -> DatasetResult:
    """The guide, NUTS (reference + floor) and Laplace on one dataset (see module docstring)."""
    x, y = _tensor(dataset.x), _tensor(dataset.y)
    guide_seconds, status, guide_draws, log_weights, task = _guide_side(guide, x, y, settings, seed)
    layout = task.layout
    chains, nuts_seconds = [], []
    for offset in range(1 + settings.floor_seeds):
        draws, seconds, _ = nuts.run(seed + offset, dataset.x, dataset.y)
        chains.append(_unconstrained(layout, draws))
        nuts_seconds.append(seconds)
    reference = np.concatenate(chains)
    laplace_runs = [laplace.run(dataset.x, dataset.y) for _ in range(settings.laplace_repeats)]
    laplace_draws = _unconstrained(
        layout, laplace.draws(laplace_runs[0], settings.num_draws, seed, dataset.x, dataset.y)
    )
    finite = np.isfinite(log_weights)
    khat = psis_khat(log_weights) if finite.all() else float("inf")
    resampled = _resampled(guide_draws, log_weights, seed) if finite.all() else guide_draws
    mean_error, sd_ratio = _moments(guide_draws, reference)
    return DatasetResult(
        name=dataset.name,
        num_points=len(dataset.y),
        num_params=layout.latent_dim,
        c2st_guide=_against(guide_draws, chains),
        c2st_floor=[c2st_accuracy(a, b) for a, b in itertools.combinations(chains, 2)],
        c2st_laplace=_against(laplace_draws, chains),
        c2st_resampled=_against(resampled, chains),
        c2st_gaussian=_moment_matched(chains, settings.num_draws, seed),
        mean_error=mean_error,
        sd_ratio=sd_ratio,
        khat=float(khat),
        passes=_reported(status, "passes", float),
        converged=_reported(status, "converged", bool),
        guide_seconds=guide_seconds,
        nuts_seconds=statistics.median(nuts_seconds),
        laplace_seconds=statistics.median(run.seconds for run in laplace_runs),
        laplace_iterations=laplace_runs[0].iterations,
    )


def _groups_by_size(datasets: list[Dataset]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The datasets stacked into one batch ``(T, N, d)``, ``(T, N)`` per size ``N``."""
    sizes = sorted({len(d.y) for d in datasets})
    return [
        (
            torch.stack([_tensor(d.x) for d in datasets if len(d.y) == size]),
            torch.stack([_tensor(d.y) for d in datasets if len(d.y) == size]),
        )
        for size in sizes
    ]


@torch.no_grad()
def _timed_posterior(guide, x: torch.Tensor, y: torch.Tensor, settings: Settings):
    """The median seconds of ``guide.posterior(x, y)`` over ``settings.guide_repeats``
    calls, and the last call's posterior."""
    times, posterior = [], None
    for _ in range(settings.guide_repeats):
        started = time.perf_counter()
        posterior = guide.posterior(x, y)
        times.append(time.perf_counter() - started)
    return statistics.median(times), posterior


def run_model(entry: RealModel, settings: Settings, cache: Path) -> ModelResult:
    """Train (or load) the guide, then run every dataset of ``entry`` (at most
    ``settings.max_groups`` of them). A training that fails is reported in the row (its
    error's first line), not raised, so that the other models still run."""
    datasets = entry.datasets()[: settings.max_groups]
    result = ModelResult(entry)
    design = RealDesign(np.concatenate([d.x for d in entry.datasets()]))
    try:
        guide, result.train_seconds = train_guide(entry, design, settings, cache)
    except (FloatingPointError, ValueError) as error:  # e.g. an invalid prior predictive draw
        result.error = f"fit failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
        return result
    started = time.perf_counter()  # warm-up: compiling is not the guide's speed
    compiled_sizes = set()
    for dataset in datasets:  # every data shape, as NUTS compiles once per shape
        if len(dataset.y) not in compiled_sizes:
            guide.precompile(_tensor(dataset.x), _tensor(dataset.y))
            compiled_sizes.add(len(dataset.y))
    batches = _groups_by_size(datasets) if len(datasets) > 1 else []
    for x, y in batches:
        guide.precompile(x, y)
    result.guide_compile_seconds = time.perf_counter() - started
    if batches:
        seconds = [_timed_posterior(guide, x, y, settings)[0] for x, y in batches]
        result.grouped_seconds = sum(seconds) / len(datasets)
    model = numpyro_model(entry.model)
    nuts = NutsReference(model, settings.num_warmup, settings.num_samples)
    laplace = LaplaceBaseline(model)
    base = HELD_OUT_SEED + 100_000 * settings.seed
    bar = tqdm(datasets, desc=entry.name, disable=not settings.progress or len(datasets) < 2)
    for index, dataset in enumerate(bar):
        seed = base + 1_000 * index
        result.datasets.append(run_dataset(guide, dataset, nuts, laplace, settings, seed))
    result.nuts_compile_seconds = nuts.compile_seconds
    result.laplace_compile_seconds = laplace.compile_seconds
    return result
