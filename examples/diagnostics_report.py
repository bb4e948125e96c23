"""Check the shipped guides with ArviZ-style diagnostics and write an HTML report.

    python examples/diagnostics_report.py                 # about 3 minutes on 2 idle CPU cores
    python examples/diagnostics_report.py --quick         # smoke test

1. the HTML report of the pretrained ``linear_regression`` guide on the shipped demo
   dataset (PSIS k̂, posterior, PPC, PSIS-LOO, refinement, SBC);
2. PSIS k̂ of every pretrained guide on held-out simulated datasets;
3. simulation-based calibration of every pretrained guide;
4. the ``logistic_regression`` guide against Pyro NUTS on a few datasets.

Findings are printed and written to ``OUT/findings.json``. Pyro NUTS takes most of the
time (about 20 s per dataset on an idle 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from iai_prob import pretrained
from iai_prob.datasets import load_linear_regression_demo
from iai_prob.diagnostics import approximate_posterior, compare_with_nuts, psis_khat, report, sbc

HELD_OUT_SEED = 777_000_000


def held_out(family, num_tasks: int, num_points: int):
    """Seeded held-out datasets ``(x, y)`` (far from the training seeds)."""
    generator = torch.Generator().manual_seed(HELD_OUT_SEED + num_points)
    _, x, y = family.sample(num_tasks, num_points, generator=generator)
    return x, y


def khat_table(sizes, num_tasks: int, num_draws: int) -> dict:
    """Median k̂ and the share below 0.7 per pretrained guide and dataset size."""
    result = {}
    for name in pretrained.available():
        guide = pretrained.load(name)
        result[name] = {}
        for n in sizes:
            x, y = held_out(guide.family, num_tasks, n)
            draws = approximate_posterior(guide, None, x, y).draw(num_draws, seed=n)
            khat = psis_khat(draws)
            result[name][n] = {
                "tasks": len(khat),
                "draws": num_draws,
                "median_khat": float(np.median(khat)),
                "share_below_0.7": float(np.mean(khat < 0.7)),
            }
            print(f"k̂ {name} N={n}: {result[name][n]}", flush=True)
    return result


def sbc_table(num_datasets: int, num_points: int) -> dict:
    """SBC of every pretrained guide on ``num_datasets`` simulated datasets."""
    result = {}
    for name in pretrained.available():
        guide = pretrained.load(name)
        outcome = sbc(guide, guide.family, num_datasets, num_points=num_points, progress=False)
        result[name] = {
            "passed": outcome.passed,
            "flagged": outcome.flagged,
            "worst_ecdf": float(outcome.ecdf_max.max()),
            "band": outcome.band,
            "min_chi2_pvalue": float(outcome.chi2_pvalue.min()),
            "z_score_sd": float(outcome.z_scores.std()),
        }
        print(f"SBC {name}: {outcome.summary()}", flush=True)
    return result


def nuts_table(num_tasks: int, sizes, num_warmup: int, num_samples: int) -> list:
    """The logistic-regression guide against Pyro NUTS on ``num_tasks`` datasets per size."""
    guide = pretrained.load("logistic_regression")
    rows = []
    for n in sizes:
        x, y = held_out(guide.family, num_tasks, n)
        for t in range(num_tasks):
            comparison = compare_with_nuts(
                guide, None, x[t], y[t], num_samples=num_samples, num_warmup=num_warmup, seed=t
            )
            rows.append(
                {
                    "N": n,
                    "task": t,
                    "max_abs_std_diff": comparison.max_abs_std_diff,
                    "sd_ratio_min": float(comparison.table["sd_ratio"].min()),
                    "sd_ratio_max": float(comparison.table["sd_ratio"].max()),
                    "c2st": comparison.c2st,
                    "nuts_seconds": comparison.nuts_seconds,
                    "guide_seconds": comparison.guide_seconds,
                }
            )
            print(f"NUTS logistic N={n} task {t}: {rows[-1]}", flush=True)
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("diagnostics_out"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args(argv)
    quick = args.quick
    torch.set_num_threads(1)
    started = time.perf_counter()

    guide = pretrained.load("linear_regression")
    x, y, _ = load_linear_regression_demo()
    if quick:
        x, y = x[:200], y[:200]
    written = report(
        guide,
        x,
        y,
        path=args.out / "report.html",
        title="Pretrained linear_regression guide on the shipped demo dataset",
        num_samples=200 if quick else 1000,
        sbc_datasets=20 if quick else 200,
        sbc_points=32 if quick else 256,
        progress=False,
    )
    findings = {"demo_report": written.findings, "demo_notes": written.notes}
    print("\n".join(f"- {note}" for note in written.notes), flush=True)

    num_tasks, num_draws = (2, 50) if quick else (64, 1000)
    sizes = (64,) if quick else (64, 1024)
    findings["khat"] = khat_table(sizes, num_tasks, num_draws)
    findings["sbc"] = sbc_table(10 if quick else 200, 32 if quick else 64)
    findings["nuts_logistic"] = nuts_table(
        1 if quick else 3,
        (64,) if quick else (64, 1024),
        num_warmup=20 if quick else 500,
        num_samples=40 if quick else 1000,
    )
    findings["seconds"] = time.perf_counter() - started
    (args.out / "findings.json").write_text(json.dumps(findings, indent=2, default=float))
    print(f"wrote {written.path} and {args.out / 'findings.json'}")
    return findings


if __name__ == "__main__":
    main()
