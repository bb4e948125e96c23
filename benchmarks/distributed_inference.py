"""Throughput of distributed batch inference (Dask, local cluster) with 1, 2, … workers.

    python benchmarks/distributed_inference.py            # 20,000 groups, 1 and 2 workers
    python benchmarks/distributed_inference.py --groups 1000000 --workers 1,2,4,8

Writes ``--groups`` linear-regression datasets (``d = 8``, ``N`` uniform on
``--min-points … --max-points``) as ``--partitions`` Parquet files partitioned by group,
then runs :func:`iai_prob.distributed.batch_inference.run_batch_inference` with the
shipped ``linear_regression`` guide on a ``LocalCluster`` of ``W`` single-threaded worker
processes for each ``W`` of ``--workers``, and prints groups per second of wall time and
per CPU second the workers used (the latter does not depend on other jobs sharing the
cores: ``W`` workers on ``W`` free cores give about ``W`` times one worker's wall-time
throughput when it stays constant). Each cluster
first has every worker import torch and load the guide, so the timed run measures
steady-state throughput; the start-up time is printed apart. A sample of groups is
checked against the exact posterior (median minus exact mean, in posterior sds).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch

__all__ = ["main"]


def write_groups(folder: Path, *, groups: int, partitions: int, low: int, high: int, seed=0):
    """Simulate ``groups`` datasets and write them as ``partitions`` Parquet files."""
    from iai_prob.models import LinearRegression

    family = LinearRegression(dim=8, noise_scale=0.5)
    rng = np.random.default_rng(seed)
    sizes = rng.integers(low, high + 1, groups)
    bounds = np.linspace(0, groups, partitions + 1).astype(int)
    folder.mkdir(parents=True, exist_ok=True)
    columns = [f"x{i}" for i in range(8)]
    for part in range(partitions):
        ids = np.arange(bounds[part], bounds[part + 1])
        frames = []
        for size in np.unique(sizes[ids]):
            members = ids[sizes[ids] == size]
            generator = torch.Generator().manual_seed(seed * 7919 + part * 1009 + int(size))
            _, x, y = family.sample(len(members), int(size), generator=generator)
            frame = pd.DataFrame(x.reshape(-1, 8).numpy(), columns=columns)
            frame["y"] = y.reshape(-1).numpy()
            frame.insert(0, "group", np.repeat(members, size).astype(np.int64))
            frames.append(frame)
        pd.concat(frames, ignore_index=True).to_parquet(folder / f"part-{part:04d}.parquet")
    return family, int(sizes.sum())


def _check_sample(family, source: Path, output: Path, count: int = 20) -> float:
    """Largest |median − exact posterior mean| over ``count`` groups (in posterior sds)."""
    summary = pd.read_parquet(output).set_index("group")
    data = pd.read_parquet(next(source.glob("*.parquet")))
    worst = 0.0
    for group in data["group"].unique()[:count]:
        rows = data[data["group"] == group]
        x = torch.tensor(rows[[f"x{i}" for i in range(8)]].to_numpy(), dtype=torch.float64)
        y = torch.tensor(rows["y"].to_numpy(), dtype=torch.float64)
        exact = family.exact_posterior(x, y)
        median = summary.loc[group, [f"w[{i}]_q50" for i in range(8)]].to_numpy(dtype=float)
        sd = exact.variance.sqrt().numpy()
        worst = max(worst, float(np.max(np.abs(median - exact.mean.numpy()) / sd)))
    return worst


def _cpu_seconds() -> float:
    """User + system CPU seconds of the calling (worker) process so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _warm_worker(checkpoint: str) -> None:
    """Import torch and load the guide in a worker (what its first partition would do)."""
    from iai_prob.distributed.batch_inference import _cached_guide

    _cached_guide(checkpoint, "cpu")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--min-points", type=int, default=16)
    parser.add_argument("--max-points", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="2,000 groups in 4 partitions")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    return parser


def main(argv=None) -> int:
    from distributed import Client, LocalCluster

    from iai_prob.distributed.batch_inference import run_batch_inference

    options = _parser().parse_args(argv)
    if options.quick:
        options.groups, options.partitions = 2_000, 4
    workers = [int(w) for w in options.workers.split(",")]
    checkpoint = str(resources.files("iai_prob.pretrained") / "linear_regression")
    scratch = Path(tempfile.mkdtemp(prefix="iai_distributed_"))
    try:
        started = time.perf_counter()
        family, rows = write_groups(
            scratch / "in",
            groups=options.groups,
            partitions=options.partitions,
            low=options.min_points,
            high=options.max_points,
        )
        print(
            f"wrote {options.groups:,} groups ({rows:,} rows) in {options.partitions} Parquet "
            f"files in {time.perf_counter() - started:.1f} s"
        )
        lines = [
            f"Distributed batch inference, shipped linear_regression guide (d = 8), "
            f"{options.groups:,} groups of {options.min_points}–{options.max_points} points, "
            f"{options.partitions} partitions; LocalCluster, 1 thread per worker process.",
            "",
            "| workers | start-up s | seconds | groups / s | speed-up | worker CPU s "
            "| groups / CPU s | max error (sd) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        baseline = None
        for count in workers:
            started = time.perf_counter()
            with (
                LocalCluster(
                    n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster,
                Client(cluster) as client,
            ):
                client.wait_for_workers(count)
                client.run(_warm_worker, checkpoint)  # every worker imports and loads once
                startup = time.perf_counter() - started
                cpu_before = sum(client.run(_cpu_seconds).values())
                result = run_batch_inference(
                    scratch / "in", scratch / f"out-{count}", checkpoint=checkpoint, client=client
                )
                cpu = sum(client.run(_cpu_seconds).values()) - cpu_before
            assert result.num_groups == options.groups and result.workers == count
            error = _check_sample(family, scratch / "in", scratch / f"out-{count}")
            baseline = baseline or result.groups_per_second
            lines.append(
                f"| {count} | {startup:.1f} | {result.seconds:.1f} | "
                f"{result.groups_per_second:,.0f} | {result.groups_per_second / baseline:.2f} | "
                f"{cpu:.1f} | {result.num_groups / cpu:,.0f} | {error:.3f} |"
            )
            print(lines[-1], flush=True)
        table = "\n".join(lines)
        print("\n" + table)
        if options.out is not None:
            options.out.write_text(table + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
