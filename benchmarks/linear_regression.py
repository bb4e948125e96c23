"""Benchmark the pretrained ``linear_regression`` guide against its targets.

    python benchmarks/linear_regression.py            # full run (about 13 minutes on 2 busy cores)
    python benchmarks/linear_regression.py --quick    # smoke test, tiny sizes (< 60 s)
    python benchmarks/linear_regression.py --sections 1,4 --out results.md

Six sections, each printed as a Markdown table with the measured numbers and a PASS/MISS
column against the library's target (see ``benchmarks/README.md``), each in its own
module of the ``linear_regression`` package beside this file (``shared`` holds what they
share):

1. ``accuracy``: accuracy vs N (median KL to the exact posterior), with a one-shot
   (``num_steps=0``) baseline of the same architecture trained here;
2. ``steps``: median KL after each refinement step of one pass (must not increase);
3. ``speed``: time to posterior per dataset vs Pyro SVI, NumPyro SVI and NumPyro NUTS;
4. ``throughput``: batched throughput (datasets per second) and what bounds it;
5. ``memory``: peak memory while streaming 10^4 … 10^6 points from a generator (one
   subprocess each);
6. ``stability``: stability over many held-out tasks (no NaN or non-PD posterior may
   come back silently).

Held-out tasks are drawn from seeds far from the training seeds (``fit`` seeds step ``s``
of a run with seed ``r`` by ``r * 1_000_003 + s``). Timings are only compared within one
run (the machine is shared), as ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from common import Report, base_parser, limit_threads, load_guide
from linear_regression.accuracy import accuracy_table
from linear_regression.memory import memory_table, memory_worker
from linear_regression.shared import (
    FULL,
    PRETRAINED,
    QUICK,
    Settings,
    duration,
    timed,
    train_oneshot,
)
from linear_regression.speed import speed_tables
from linear_regression.stability import stability_table
from linear_regression.steps import steps_tables
from linear_regression.throughput import throughput_tables


def header(args, guide) -> str:
    """What ran, where, with which guide."""
    card = guide.card.get("budget", {})
    return "\n".join(
        [
            "## iai_prob benchmark: linear_regression",
            "",
            f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
            f"- guide: {args.guide or 'pretrained ' + PRETRAINED} ({guide.family!r}), trained "
            f"{card.get('steps')} steps, N in {card.get('num_points')}, batch_size "
            f"{guide.config['batch_size']}",
            f"- machine: {platform.machine()}, {os.cpu_count()} CPUs visible, "
            f"torch threads: {torch.get_num_threads()}, torch {torch.__version__}, "
            f"load average at start {os.getloadavg()[0]:.1f}",
            f"- mode: {'quick (smoke test sizes)' if args.quick else 'full'}",
            "",
        ]
    )


def run_sections(args, guide, settings: Settings, report: Report) -> None:
    """Run the selected sections in order, adding each table to ``report``."""
    baseline = train_oneshot(guide, settings) if args.sections & {1, 4} else None
    sections = {
        1: lambda: [accuracy_table(guide, settings, baseline)],
        2: lambda: steps_tables(guide, settings),
        3: lambda: speed_tables(guide, settings),
        4: lambda: throughput_tables(guide, settings, baseline.guide),
        5: lambda: [memory_table(args, settings)],
        6: lambda: [stability_table(guide, settings)],
    }
    for number in sorted(args.sections):
        tables, spent = timed(sections[number])
        for table in tables:
            report.add(table.markdown())
        report.add(f"_section {number}: {duration(spent)}_\n")


def parse_args(argv=None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sections", default="1,2,3,4,5,6", help="comma-separated subset")
    parser.add_argument("--tasks", type=int, default=None, help="tasks drawn in section 6")
    parser.add_argument("--stream-batch", type=int, default=None, help="section 5 batch size")
    parser.add_argument("--memory-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sections = {int(s) for s in args.sections.split(",") if s.strip()}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    limit_threads(args.threads)
    settings = QUICK if args.quick else FULL
    overrides = {"stability_tasks": args.tasks, "stream_batch": args.stream_batch}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v})
    if args.memory_worker is not None:
        print(json.dumps(memory_worker(args.memory_worker, settings.stream_batch, args.guide)))
        return 0
    started = time.perf_counter()
    guide = load_guide(PRETRAINED, args.guide)
    report = Report()
    report.add(header(args, guide))
    try:
        run_sections(args, guide, settings, report)
    finally:
        report.add(f"_total wall time {time.perf_counter() - started:.0f} s_")
        report.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
