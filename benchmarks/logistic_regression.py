"""Benchmark the pretrained ``logistic_regression`` guide against NumPyro NUTS.

    python benchmarks/logistic_regression.py                 # full run (about 10 minutes)
    python benchmarks/logistic_regression.py --quick         # smoke test (< 60 s)
    python benchmarks/logistic_regression.py --out results.md

Held-out tasks of ``LogisticRegression(dim=8)`` (``w ~ N(0, I)``, ``y ~ Bernoulli(σ(xᵀw))``)
at N = 64, 1,024 and 16,384 points (the guide was trained on N ≤ 256). The reference is
single-chain NUTS (500 warmup + 1,000 draws) on the same model written in NumPyro. Per
size, over tasks:

* standardized mean error ``max_d |mean_q − mean_NUTS| / sd_NUTS`` and the ratio
  ``sd_q / sd_NUTS`` of every coordinate;
* C2ST: cross-validated accuracy of an MLP telling 1,000 guide draws from the 1,000 NUTS
  draws (target: median ≤ 0.6);
* PSIS k̂ of the guide from 1,000 importance weights (target: k̂ < 0.7 on ≥ 90 % of tasks);
* time per dataset of the guide and of NUTS.

The NUTS mean and sd carry Monte Carlo error: with an effective sample size near 1,000
the mean error of an exact posterior is about 0.03 per coordinate, and its maximum over
8 coordinates about 0.07.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# run as a script: Python puts this folder first on sys.path
from common import (
    KHAT_HEADERS,
    Comparison,
    NutsReference,
    Report,
    base_parser,
    c2st_accuracy,
    chunked_log_weights,
    compare,
    guide_draws,
    khat_rows,
    limit_threads,
    load_guide,
    markdown_table,
    posterior,
    psis_khat,
    spread,
    stopwatch,
    timing_section,
    verdict,
)

PRETRAINED = "logistic_regression"
C2ST_TARGET = 0.6


@dataclass(frozen=True)
class Settings:
    """Sizes of the run: tasks per dataset size, NUTS length, draws per task."""

    tasks: dict[int, int] = field(default_factory=lambda: {64: 64, 1024: 64, 16384: 64})
    num_warmup: int = 500
    num_samples: int = 1000
    num_draws: int = 1000
    single_datasets: int = 3


FULL = Settings()
QUICK = Settings(
    tasks={64: 3, 256: 2}, num_warmup=150, num_samples=300, num_draws=300, single_datasets=1
)


def numpyro_model(prior_scale: float):
    """The NumPyro twin of ``LogisticRegression.model`` for one dataset ``(x, y)``."""
    import numpyro
    import numpyro.distributions as dist

    def model(x, y):
        w = numpyro.sample("w", dist.Normal(0.0, prior_scale).expand([x.shape[-1]]).to_event(1))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)

    return model


@dataclass
class Metrics:
    """Per-task accuracy of the guide against NUTS at one dataset size."""

    mean_error: np.ndarray
    sd_ratio: np.ndarray
    c2st: np.ndarray
    khat: np.ndarray


def measure(guide, comparison: Comparison, settings: Settings) -> Metrics:
    """Mean error, sd ratio, C2ST and k̂ of the guide's posteriors in ``comparison``."""
    q = posterior(guide, comparison.state)
    w_nuts = comparison.nuts.draws["w"]  # (T, S, D)
    mean_nuts, sd_nuts = w_nuts.mean(1), w_nuts.std(1, ddof=1)
    mean_q, sd_q = q.mean.numpy(), q.variance.sqrt().numpy()
    draws = guide_draws(guide, comparison.state, settings.num_draws, seed=comparison.num_points)
    draws = draws.numpy()  # (S, T, D): the latent z is w itself (a real site)
    c2st = [c2st_accuracy(draws[:, t], w_nuts[t], seed=t) for t in range(comparison.num_tasks)]
    log_weights = chunked_log_weights(guide, comparison.args, comparison.state, settings.num_draws)
    return Metrics(
        mean_error=(np.abs(mean_q - mean_nuts) / sd_nuts).max(-1),
        sd_ratio=sd_q / sd_nuts,
        c2st=np.array(c2st),
        khat=psis_khat(log_weights),
    )


def accuracy_rows(results: dict[int, tuple[Comparison, Metrics]]) -> list[list[object]]:
    """Rows of the accuracy table, one per dataset size."""
    rows = []
    for n, (comparison, metrics) in results.items():
        c2st = float(np.median(metrics.c2st))
        rows.append(
            [
                f"{n:,}",
                comparison.num_tasks,
                f"{comparison.nuts.leapfrog_steps:.1f}",
                spread(metrics.mean_error),
                spread(metrics.sd_ratio.ravel()),
                spread(metrics.c2st),
                f"median ≤ {C2ST_TARGET}",
                verdict(c2st <= C2ST_TARGET),
            ]
        )
    return rows


ACCURACY_HEADERS = (
    "N",
    "tasks",
    "NUTS leapfrog steps/iter",
    "mean error: max over dims of abs(Δmean) / sd_NUTS",
    "sd ratio sd_q/sd_NUTS (all dims)",
    "C2ST accuracy",
    "C2ST target",
    "result",
)


def run(settings: Settings, guide_path: Path | None) -> dict[int, tuple[Comparison, Metrics]]:
    """Compare the guide with NUTS at every dataset size of ``settings``."""
    guide = load_guide(PRETRAINED, guide_path)
    reference = NutsReference(
        numpyro_model(guide.family.prior_scale), settings.num_warmup, settings.num_samples
    )
    results = {}
    for n, num_tasks in settings.tasks.items():
        comparison = compare(
            guide,
            reference,
            n,
            num_tasks,
            single_datasets=settings.single_datasets,
            nuts_args=lambda x, y: (x.numpy(), y.numpy()),
        )
        results[n] = comparison, measure(guide, comparison, settings)
        print(f"N = {n:,}: done", file=sys.stderr, flush=True)
    return results


def main(argv=None) -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args(argv)
    limit_threads(args.threads)
    settings = QUICK if args.quick else FULL
    with stopwatch() as elapsed:
        results = run(settings, args.guide)
    report = Report()
    report.add(
        f"## Logistic regression (d = 8): guide vs NUTS{' (quick)' if args.quick else ''}\n\n"
        f"NUTS: one chain, {settings.num_warmup} warmup + {settings.num_samples} draws per "
        f"task; guide: {settings.num_draws} draws per task. Cells: median [10 %, 90 %] over "
        "tasks (the sd ratio over tasks × dims). Held-out tasks per N: "
        + ", ".join(f"{n:,}: {t}" for n, t in settings.tasks.items())
        + ".\n"
    )
    report.add(markdown_table(ACCURACY_HEADERS, accuracy_rows(results)) + "\n")
    khats = {n: metrics.khat for n, (_, metrics) in results.items()}
    report.add("### PSIS k̂ of the guide\n\n" + markdown_table(KHAT_HEADERS, khat_rows(khats)))
    report.add(timing_section(results, args.threads, elapsed()))
    report.save(args.out)


if __name__ == "__main__":
    main()
