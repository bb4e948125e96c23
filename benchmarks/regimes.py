"""The three amortization regimes side by side, one-shot vs iterative, in and out of distribution.

    python benchmarks/regimes.py --quick                   # smoke test (about 2 minutes)
    python benchmarks/regimes.py --out docs/regimes_results.md   # full run
    python benchmarks/regimes.py --families linear_regression,digits_few_shot

Rows: task family × condition (in distribution; out of distribution: more context points
than trained on, inputs from a wider range, or classes held out of training). Columns:
parametric / explicit / implicit × one-shot / iterative, plus the optimization-based
baselines MAML and Meta-SGD (iterative; their one-shot state ignores the data). Each
learner is meta-trained once per family (``fit``, greedy, N in [16, 64], mini-batches of
16) and scored on 64 held-out tasks with 64 query points each (:mod:`regime_runs`).
"Iterative" = two passes of mini-batches of 16 over the context; "one-shot" = the
guide's initial state from its set encoder (at most 256 context points), or for the
implicit regime one step that reads the whole context. The same trained networks give
both columns. Also writes ``docs/regimes_refinement.png``: the error after each
refinement step per regime, in distribution.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

# run as a script: Python puts this folder first on sys.path
from common import Report, base_parser, limit_threads, markdown_table
from regime_runs import REGIMES, Budget, Condition, FamilySpec, evaluate, train

from iai_prob.inference import IterativeAmortizedGuide, fit
from iai_prob.inference.evaluation import held_out_kl
from iai_prob.models import (
    GaussianMixture,
    LinearRegression,
    LogisticRegression,
    MLPClassification,
    MLPRegression,
)
from iai_prob.models.digits import DigitsFewShot, DigitsGeneration

HELD_OUT_CLASSES = (7, 8, 9)
PRIMARY = {"regression": "mse", "classification": "error", "generation": "nll"}
LABELS = {
    "parametric": "parametric",
    "explicit": "explicit",
    "implicit": "implicit",
    "maml": "MAML",
    "meta_sgd": "Meta-SGD",
}


def family_specs() -> list[FamilySpec]:
    """The task families of the comparison and their test conditions."""
    linear = LinearRegression(dim=4, noise_scale=0.5)
    mlp = MLPRegression(dim=1, hidden=4, noise_scale=0.1)
    logistic = LogisticRegression(dim=2, prior_scale=3.0)
    mlp_classes = MLPClassification(dim=2, hidden=4, logit_scale=5.0)
    digits = DigitsFewShot(num_ways=3, dim=8)
    mixture = GaussianMixture(dim=2, num_components=3)
    generation = DigitsGeneration()

    def sizes(family, wide: float | None = None):
        conditions = [
            Condition("in distribution (N = 64)", family, 64),
            Condition("OOD: N = 512 points", family, 512),
        ]
        if wide is not None:
            conditions.append(Condition(f"OOD: inputs × {wide:g}", family, 64, wide))
        return conditions

    return [
        FamilySpec("linear_regression", "regression", linear, sizes(linear, 3.0)),
        FamilySpec("mlp_regression", "regression", mlp, sizes(mlp, 2.0), inner_lr=0.005),
        FamilySpec(
            "linear_classification",
            "classification",
            logistic,
            sizes(logistic, 3.0),
            likelihood="bernoulli",
        ),
        FamilySpec(
            "mlp_classification",
            "classification",
            mlp_classes,
            sizes(mlp_classes),
            likelihood="bernoulli",
        ),
        FamilySpec(
            "digits_few_shot",
            "classification",
            digits,
            [
                Condition("in distribution (classes 0–6, N = 48)", digits, 48),
                Condition(
                    "OOD: held-out classes 7–9 (N = 48)",
                    DigitsFewShot(num_ways=3, dim=8, classes=HELD_OUT_CLASSES),
                    48,
                ),
            ],
            likelihood="categorical",
            num_classes=3,
        ),
        FamilySpec(
            "gaussian_mixture",
            "generation",
            mixture,
            sizes(mixture),
            explicit_options={"latent_dim": 4, "hidden": 64, "num_components": 3},
        ),
        FamilySpec(
            "digits_generation",
            "generation",
            generation,
            [
                Condition("in distribution (classes 0–6, N = 48)", generation, 48),
                Condition(
                    "OOD: held-out classes 7–9 (N = 48)",
                    DigitsGeneration(classes=HELD_OUT_CLASSES),
                    48,
                ),
            ],
            posterior="diagonal",
            inner_lr=1.0,
            explicit_options={
                "latent_dim": 4,
                "hidden": 64,
                "num_components": 4,
                "observation": "bernoulli",
            },
        ),
    ]


def budget(quick: bool) -> Budget:
    if quick:
        steps = {"parametric": 4, "explicit": 4, "implicit": 6, "maml": 3, "meta_sgd": 3}
        return Budget(steps, tasks_per_step=4, eval_tasks=8)
    steps = {"parametric": 40, "explicit": 60, "implicit": 150, "maml": 30, "meta_sgd": 30}
    return Budget(steps)


def cell(scores: dict | None, kind: str, reason: str | None = None) -> str:
    if scores is None:
        return f"— ({reason})"
    if kind == "generation":
        return f"{scores['nll']:.3f} / {scores['mmd']:.4f}"
    return f"{scores[PRIMARY[kind]]:.3f} / {scores['nll']:.3f}"


def run_family(spec: FamilySpec, plan: Budget, report: Report):
    """Train every regime on ``spec`` and return the table rows, curves and budgets."""
    learners, failures = {}, {}
    for regime in REGIMES:
        if regime == "implicit" and spec.kind == "generation":
            failures[regime] = "not implemented: the implicit predictor needs query inputs x*"
            continue
        try:
            learners[regime] = train(regime, spec, plan)
        except Exception as error:  # a regime that fails is reported, not hidden
            failures[regime] = f"training failed: {type(error).__name__}"
        print(f"  trained {spec.name}/{regime}", file=sys.stderr, flush=True)
    rows, curves = [], {}
    for index, condition in enumerate(spec.conditions):
        results = {}
        for regime, learner in learners.items():
            try:
                results[regime] = evaluate(learner, spec, condition, plan, every_step=index == 0)
            except Exception as error:
                failures[f"{regime}@{index}"] = f"diverged: {type(error).__name__}"
        if index == 0:
            curves = {
                r: [s[PRIMARY[spec.kind]] for s in trace] for r, (trace, _) in results.items()
            }
        metric = "nll / mmd²" if spec.kind == "generation" else PRIMARY[spec.kind] + " / nll"
        row = [spec.name, condition.label, metric]
        for regime in ("parametric", "explicit", "implicit"):
            reason = failures.get(regime) or failures.get(f"{regime}@{index}")
            trace, one_shot = results.get(regime, (None, None))
            row += [cell(one_shot, spec.kind, reason), cell(trace and trace[-1], spec.kind, reason)]
        for regime in ("maml", "meta_sgd"):
            reason = failures.get(regime) or failures.get(f"{regime}@{index}")
            trace, _ = results.get(regime, (None, None))
            row.append(cell(trace and trace[-1], spec.kind, reason))
        rows.append(row)
    budgets = [
        [
            spec.name,
            LABELS[r],
            plan.steps[r],
            learner.skipped,
            f"{learner.seconds:.0f} s",
            f"{learner.final_loss:.3g}",
        ]
        for r, learner in learners.items()
    ]
    return rows, curves, budgets


HEADERS = (
    "family",
    "condition",
    "metric",
    "parametric one-shot",
    "parametric iterative",
    "explicit one-shot",
    "explicit iterative",
    "implicit one-shot",
    "implicit iterative",
    "MAML",
    "Meta-SGD",
)


def plot(curves: dict, kinds: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(curves)
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names, strict=False):
        for regime, values in curves[name].items():
            color = f"C{REGIMES.index(regime)}"  # one color per regime in every panel
            axis.plot(range(len(values)), values, marker=".", color=color, label=LABELS[regime])
        axis.legend(fontsize=7)
        axis.set_title(name)
        axis.set_xlabel("refinement step k")
        axis.set_ylabel(PRIMARY[kinds[name]])
    for axis in axes.flat[len(names) :]:
        axis.axis("off")
    figure.suptitle("Held-out error after each refinement step (in distribution)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


SIGNAL_SETS = {"data": ("data",), "grad": ("grad",), "data + grad": ("data", "grad")}


def signals_section(plan: Budget, report: Report) -> None:
    """What the update should see, by dimension: exact KL(q ‖ p(w | D)) of linear regression.

    The paper's claim: gradients help in high dimension, raw observations in low.
    """
    dims = (2, 16)
    rows = []
    for dim in dims:
        family = LinearRegression(dim=dim, noise_scale=0.5)
        for label, signals in SIGNAL_SETS.items():
            torch.manual_seed(0)
            guide = IterativeAmortizedGuide(
                family,
                signals=signals,
                encoder="deep_sets",
                encoder_options={"embed_dim": 32, "hidden_dim": 64},
                batch_size=plan.batch_size,
            )
            started = time.perf_counter()
            fit(
                guide,
                family,
                steps=plan.steps["parametric"],
                tasks_per_step=plan.tasks_per_step,
                num_points=plan.num_points,
                learning_rate=1e-3,
                progress=False,
            )
            seconds = time.perf_counter() - started
            row = [dim, label]
            for n in (64, 512):
                steps = plan.passes * -(-n // plan.batch_size)
                for k in (0, steps):
                    kl = held_out_kl(guide, family, n, num_tasks=plan.eval_tasks, num_steps=k)
                    row.append(f"{float(kl.median()):.3g}")
            rows.append([*row, f"{seconds:.0f} s"])
            print(f"  signals d={dim} {label}", file=sys.stderr, flush=True)
    report.add("\n### What the update sees: data, gradients or both (linear regression)\n")
    report.add(
        markdown_table(
            (
                "d",
                "signals",
                "KL one-shot N=64",
                "KL iterative N=64",
                "KL one-shot N=512",
                "KL iterative N=512",
                "training",
            ),
            rows,
        )
    )
    report.add(
        "\nMedian exact KL(q ‖ p(w | D)) in nats over held-out tasks; parametric guide, "
        f"{plan.steps['parametric']} training steps each; iterative = two passes of "
        "mini-batches of 16."
    )


def main(argv=None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--families", default=None, help="comma-separated subset of families")
    parser.add_argument(
        "--sections",
        default="table,signals",
        help="comma-separated: table (the regimes table and plot), signals (data vs gradients)",
    )
    parser.add_argument(
        "--plot", type=Path, default=Path("docs/regimes_refinement.png"), help="PNG path"
    )
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    torch.manual_seed(0)
    specs = family_specs()
    if args.families:
        wanted = args.families.split(",")
        unknown = set(wanted) - {s.name for s in specs}
        if unknown:
            raise SystemExit(
                f"unknown families {sorted(unknown)}; known: {[s.name for s in specs]}"
            )
        specs = [s for s in specs if s.name in wanted]
    plan = budget(args.quick)
    report = Report()
    started = time.perf_counter()
    sections = args.sections.split(",")
    if "signals" in sections:
        signals_section(plan, report)
    if "table" not in sections:
        report.add(f"\nwall time {time.perf_counter() - started:.0f} s, {args.threads} thread(s)")
        report.save(args.out)
        return
    table, curves, budgets = [], {}, []
    for spec in specs:
        rows, family_curves, family_budgets = run_family(spec, plan, report)
        table += rows
        curves[spec.name] = family_curves
        budgets += family_budgets
    report.add("## Regimes: one-shot vs iterative, in and out of distribution\n")
    report.add(markdown_table(HEADERS, table))
    report.add(
        "\nCells: primary metric / NLL (regression: MSE of the predictive mean; "
        "classification: error rate); generation: NLL of held-out points in nats per point / "
        "unbiased RBF-kernel MMD² (median-heuristic bandwidth) between 64 posterior-predictive "
        "points and the 64 held-out points of a task, mean over tasks. "
        "MAML and Meta-SGD columns are after the same iterative steps.\n"
    )
    report.add("### Training budget per learner\n")
    report.add(
        markdown_table(("family", "regime", "steps", "skipped", "time", "final loss"), budgets)
    )
    report.add(f"\nwall time {time.perf_counter() - started:.0f} s, {args.threads} thread(s)")
    plot(curves, {s.name: s.kind for s in specs}, args.plot)
    report.save(args.out)


if __name__ == "__main__":
    main()
