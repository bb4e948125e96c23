"""Latency of ``guide.posterior(x, y)``, one dataset at a time, with the traced log joint on
and off (:mod:`iai_prob.inference.traced_log_joint`; ``IAI_TRACE_LOG_JOINT``).

For each shipped guide and thread count: the median wall time of ``--calls`` posteriors
on distinct datasets of ``N`` points (after ``--warmup`` calls that trace the model), with
tracing on and off alternating in the same run, and their ratio. Prints a Markdown table.

    .venv/bin/python benchmarks/latency.py                # N = 1,024, 30 calls, 1 and all threads
    .venv/bin/python benchmarks/latency.py --quick        # smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from iai_prob import pretrained
from iai_prob.inference.traced_log_joint import ENV_VAR

GUIDES = ("logistic_regression", "linear_regression")


def median_latencies(guide, datasets, warmup: int) -> dict[str, float]:
    """Median seconds of ``guide.posterior`` over ``datasets`` after ``warmup`` calls, per
    mode (``"1"`` traced, ``"0"`` eager); the modes alternate on each dataset so that a
    change of load on a shared machine hits both alike."""
    times = {"1": [], "0": []}
    for index, (x, y) in enumerate(datasets):
        for mode in times:
            os.environ[ENV_VAR] = mode
            start = time.perf_counter()
            guide.posterior(x, y)
            if index >= warmup:
                times[mode].append(time.perf_counter() - start)
    return {mode: statistics.median(values) for mode, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="5 calls, N = 256")
    options = parser.parse_args()
    if options.quick:
        options.points, options.calls, options.warmup = 256, 5, 1
    default_threads = torch.get_num_threads()
    print(f"guide.posterior, one dataset at a time, N = {options.points:,}")
    print("| guide | threads | traced (ms) | eager (ms) | eager / traced |")
    print("|---|---|---|---|---|")
    for name in GUIDES:
        guide = pretrained.load(name)
        generator = torch.Generator().manual_seed(1_000_000_000)
        datasets = [
            tuple(t[0] for t in guide.family.sample(1, options.points, generator=generator)[1:])
            for _ in range(options.warmup + options.calls)
        ]
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            seconds = median_latencies(guide, datasets, options.warmup)
            print(
                f"| {name} | {threads} | {1e3 * seconds['1']:.1f} | {1e3 * seconds['0']:.1f} "
                f"| {seconds['0'] / seconds['1']:.2f}x |"
            )
    torch.set_num_threads(default_threads)
    os.environ.pop(ENV_VAR, None)


if __name__ == "__main__":
    main()
