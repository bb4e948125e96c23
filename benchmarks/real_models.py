"""The real-model suite: the default guide against NUTS and Laplace on models people write.

    python benchmarks/real_models.py                    # full run (trains 9 guides, cached)
    python benchmarks/real_models.py --quick            # smoke test (few steps, few draws)
    python benchmarks/real_models.py --models engel_loglinear,spector_logistic --steps 300

Nine models on real datasets shipped inside statsmodels and scikit-learn, priors as
analysts write them in raw units (:mod:`real_models.models`): linear with wide priors,
log-linear, two logistic, Poisson, negative binomial, robust Student-t, a simplex and a
positive latent, and per-firm regressions of 20 rows run as 11 datasets. For each, the
guide ``IterativeAmortizedGuide(model, family="full_rank", batch_size=64)`` is trained by
``fit`` at its defaults (``--steps``, 1,000 by default) on the model's prior predictive with
covariates resampled from the real design, and cached in ``--cache`` so that a rerun does not
retrain. Each dataset is then inferred by the guide, by single-chain NumPyro NUTS (500 warmup
+ 1,000 draws; ``1 + --floor-seeds`` reference chains, also the NUTS-vs-NUTS floor)
and by a compiled damped-Newton Laplace approximation (:mod:`real_models.laplace`), all in
this run (:mod:`real_models.harness` says how each number is measured).

Columns: guide C2ST (1,000 guide draws vs 1,000 draws of each of the ``1 + --floor-seeds``
NUTS reference chains: the mean and range over chains; 0.5 = indistinguishable), the NUTS
floor (every pair of reference chains, mean and range), Laplace C2ST (as the guide's), the
guide's largest mean error in reference sds (the chains pooled), its sd ratio range, PSIS
k̂, C2ST after PSIS resampling of the guide's draws, the best a Gaussian can do (the
moment-matched Gaussian's C2ST), passes and convergence as the guide's
result reports them (``—`` where it reports none), and seconds per dataset of the guide,
NUTS (sampling only, compile excluded) and Laplace (compiled call only). A grouped model's
cells are the median and ``[min, max]`` over its groups; its guide time is given one group
at a time and, in brackets, per group with every group of a size in one call (as ``iai
infer --group`` answers them). The last two columns check issue 17's targets: guide C2ST ≤
0.55 (its mean over chains; for groups the median over groups of those means) where the
moment-matched Gaussian reaches 0.55, and otherwise ``k̂`` above 0.5 (which the guide's
answer flags) with C2ST ≤ 0.6 after PSIS resampling; and the guide at least 20× faster
than NUTS (for groups: in one call).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from common import Report, limit_threads, markdown_table, verdict

C2ST_TARGET = 0.55
RESAMPLED_TARGET = 0.6
KHAT_FLAG = 0.5
"""Issue 17.3: guide C2ST ≤ 0.55 where a Gaussian can reach it (the moment-matched
Gaussian's C2ST ≤ 0.55); where none can (heavy tails, skew), ``k̂`` flags it (above 0.5:
the guide's :class:`~iai_prob.posterior_status.PosteriorNotice` or warning) and the
PSIS-resampled draws reach C2ST ≤ 0.6."""
ACCURACY_HEADER = (
    f"C2ST ≤ {C2ST_TARGET} (where no Gaussian can: k̂ > {KHAT_FLAG}, after PSIS ≤ "
    f"{RESAMPLED_TARGET})"
)
SPEED_TARGET = 20
"""Issue 17: the converged default at least this many times faster than NUTS per dataset
(for a model of groups, per group as ``iai infer --group`` answers them: in one call)."""
DEFAULT_CACHE = Path("runs") / "real_models"

HEADERS = (
    "model",
    "kind",
    "N",
    "params",
    "guide C2ST",
    "NUTS floor C2ST",
    "Laplace C2ST",
    "max \\|mean err\\| (ref sd)",
    "sd ratio",
    "k̂",
    "C2ST after PSIS",
    "moment-matched Gaussian C2ST",
    "passes",
    "converged",
    "guide s/dataset",
    "NUTS s/dataset",
    "Laplace s/dataset",
    "NUTS ÷ guide",
    ACCURACY_HEADER,
    f"≥ {SPEED_TARGET}× NUTS",
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != text.strip():
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    if text.strip() == "0":
        return 0
    return _positive_int(text)


def parser() -> argparse.ArgumentParser:
    from real_models.models import MODELS

    result = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    result.add_argument("--quick", action="store_true", help="smoke run: few steps and draws")
    result.add_argument("--out", type=Path, default=None, help="also write the table here")
    result.add_argument(
        "--threads", type=_positive_int, default=1, help="CPU threads (torch, XLA, BLAS)"
    )
    result.add_argument(
        "--steps", type=_positive_int, default=None, help="fit steps (default 1,000; quick 20)"
    )
    result.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"folder of the trained guides, reused by a rerun (default {DEFAULT_CACHE})",
    )
    result.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated, of: {', '.join(MODELS)}"
    )
    result.add_argument("--seed", type=_non_negative_int, default=0, help="seeds everything")
    result.add_argument(
        "--floor-seeds",
        type=_positive_int,
        default=None,
        help="NUTS reference chains beyond the first (default 3; quick 1)",
    )
    result.add_argument(
        "--max-groups", type=_positive_int, default=None, help="datasets per model at most"
    )
    result.add_argument("--no-progress", action="store_true", help="no progress bars")
    return result


def settings_from(args):
    from real_models.harness import Settings

    quick = Settings(
        steps=20,
        num_warmup=150,
        num_samples=300,
        num_draws=300,
        floor_seeds=1,
        guide_repeats=1,
        laplace_repeats=2,
        max_groups=3,
    )
    base = quick if args.quick else Settings()
    return Settings(
        steps=args.steps or base.steps,
        num_warmup=base.num_warmup,
        num_samples=base.num_samples,
        num_draws=base.num_draws,
        floor_seeds=args.floor_seeds or base.floor_seeds,
        guide_repeats=base.guide_repeats,
        laplace_repeats=base.laplace_repeats,
        max_groups=args.max_groups or base.max_groups,
        seed=args.seed,
        progress=not args.no_progress,
    )


def selected_models(text: str, parser_: argparse.ArgumentParser):
    from real_models.models import MODELS

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if unknown or not names:
        parser_.error(
            f"--models: unknown model(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(MODELS)}"
        )
    return [MODELS[name] for name in dict.fromkeys(names)]


# ---------------------------------------------------------------------------- formatting
def duration(value: float) -> str:
    """Seconds with three significant digits, in ms below one second."""
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"


def summary(values, digits: int = 2, fmt=None) -> str:
    """One value, or ``median [min, max]`` of several."""
    fmt = fmt or (lambda v: f"{v:.{digits}f}")
    values = list(values)
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}, {fmt(max(values))}]"


def over_chains(scores_per_dataset) -> tuple[float, str]:
    """C2ST scores against several NUTS chains (or of several chain pairs), per dataset:
    the score that decides (the mean over chains; for groups the median over groups of
    those means) and its cell (``mean [min, max]`` over the chains of one dataset, or
    ``median [min, max]`` over groups)."""
    scores = [list(values) for values in scores_per_dataset]
    if len(scores) == 1:
        values = scores[0]
        mean = statistics.mean(values)
        if len(values) == 1:
            return mean, f"{mean:.2f}"
        return mean, f"{mean:.2f} [{min(values):.2f}, {max(values):.2f}]"
    means = [statistics.mean(values) for values in scores]
    return statistics.median(means), summary(means)


def status_cells(results) -> tuple[str, str]:
    """``passes`` and ``converged`` as the guide's results report them, ``—`` if not."""
    passes = [r.passes for r in results if r.passes is not None]
    converged = [r.converged for r in results if r.converged is not None]
    passes_cell = summary(passes, fmt=lambda v: f"{v:g}") if passes else "—"
    if not converged:
        return passes_cell, "—"
    if len(results) == 1:
        return passes_cell, "yes" if converged[0] else "no"
    return passes_cell, f"{sum(bool(c) for c in converged)}/{len(results)}"


def row(model_result) -> list[str]:
    """A table row for one model."""
    entry, results = model_result.entry, model_result.datasets
    if model_result.error is not None:
        return [entry.name, entry.kind, model_result.error, *["—"] * (len(HEADERS) - 3)]
    sizes = {r.num_points for r in results}
    num_points = (
        f"{results[0].num_points:,}"
        if len(results) == 1
        else f"{summary(sorted(sizes), fmt=lambda v: f'{v:,}')} × {len(results)} groups"
        if len(sizes) > 1
        else f"{results[0].num_points:,} × {len(results)} groups"
    )
    low = [r.sd_ratio[0] for r in results]
    high = [r.sd_ratio[1] for r in results]
    passes, converged = status_cells(results)
    guide = statistics.median(r.guide_seconds for r in results)
    nuts = statistics.median(r.nuts_seconds for r in results)
    grouped = model_result.grouped_seconds
    guide_cell, ratio_cell, ratio = duration(guide), f"{nuts / guide:.1f}×", nuts / guide
    if grouped is not None:  # the grouped path's speed decides, as `iai infer --group` runs
        guide_cell += f" ({duration(grouped)} in one call)"
        ratio_cell += f" ({nuts / grouped:.0f}× in one call)"
        ratio = nuts / grouped
    c2st, c2st_cell = over_chains(r.c2st_guide for r in results)
    resampled, resampled_cell = over_chains(r.c2st_resampled for r in results)
    gaussian, gaussian_cell = over_chains(r.c2st_gaussian for r in results)
    khat = statistics.median(r.khat for r in results)
    if gaussian <= C2ST_TARGET:
        accuracy = verdict(c2st <= C2ST_TARGET)
    else:
        flagged = khat > KHAT_FLAG and resampled <= RESAMPLED_TARGET
        accuracy = f"{verdict(flagged)} (no Gaussian reaches {C2ST_TARGET})"
    return [
        entry.name,
        entry.kind,
        num_points,
        str(results[0].num_params),
        c2st_cell,
        over_chains(r.c2st_floor for r in results)[1],
        over_chains(r.c2st_laplace for r in results)[1],
        summary((r.mean_error for r in results), digits=2),
        f"{min(low):.2f}–{max(high):.2f}",
        summary(r.khat for r in results),
        resampled_cell,
        gaussian_cell,
        passes,
        converged,
        guide_cell,
        duration(nuts),
        duration(statistics.median(r.laplace_seconds for r in results)),
        ratio_cell,
        accuracy,
        verdict(ratio >= SPEED_TARGET),
    ]


def costs_row(model_result) -> list[str]:
    """Training and compile seconds, Laplace's Newton iterations."""
    iterations = [r.laplace_iterations for r in model_result.datasets]
    return [
        model_result.entry.name,
        duration(model_result.train_seconds),
        duration(model_result.guide_compile_seconds),
        duration(model_result.nuts_compile_seconds),
        duration(model_result.laplace_compile_seconds),
        summary(iterations, fmt=str) if iterations else "—",
    ]


COST_HEADERS = (
    "model",
    "fit (a cached guide: its recorded time)",
    "guide compile (`precompile`, per shape)",
    "NUTS compile",
    "Laplace compile",
    "Newton iterations",
)


def main(argv=None) -> int:
    arguments = parser()
    args = arguments.parse_args(argv)
    entries = selected_models(args.models, arguments)
    limit_threads(args.threads)  # before JAX starts

    import jax
    import torch

    jax.config.update("jax_enable_x64", True)  # the NUTS reference and Newton in float64
    torch.manual_seed(args.seed)
    from real_models.harness import run_model

    settings = settings_from(args)
    command = "python benchmarks/real_models.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    report = Report()
    report.add(
        f"## Real-model suite\n\n`{command.strip()}`: guide trained {settings.steps} steps, "
        f"{settings.num_draws} draws, NUTS {settings.num_warmup} + {settings.num_samples} "
        f"({1 + settings.floor_seeds} reference chains), {args.threads} thread(s)."
    )
    results = []
    for entry in entries:
        result = run_model(entry, settings, args.cache)
        results.append(result)
        print(markdown_table(HEADERS, [row(result)]), flush=True)  # a row as soon as it is done
    report.add("\n" + markdown_table(HEADERS, [row(r) for r in results]))
    report.add("\n" + markdown_table(COST_HEADERS, [costs_row(r) for r in results]))
    report.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
