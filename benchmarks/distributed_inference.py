"""Throughput of distributed batch inference (Dask, local cluster) with 1, 2, … workers,
against one process, and of data-parallel training on 1 and 2 torchrun processes.

    python benchmarks/distributed_inference.py            # 100,000 groups, 1 and 2 workers
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
checked against the exact posterior (median minus exact mean, in posterior sds), and
each worker's peak resident memory is read from the worker itself.

In the same run: the one-process grouped ``iai infer`` on the same groups (one Parquet
file holding them all, ``OMP_NUM_THREADS=1``): its wall time end to end (reading,
posteriors, 100 draws per group into the netCDF file) and the groups per second of its
posterior phase, as it prints them; and meta-training steps per second of ``iai train
linear_regression --nproc W`` for ``W`` = 1 and 2 (32 tasks per step in all; the time of
``--train-steps`` steps minus that of 5, from the cards' in-run seconds, so start-up and
the validations cancel). The free cores at the start (CPUs minus the 1-minute load
average) are printed with the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
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


def _peak_memory_mb() -> float:
    """Peak resident memory of the calling (worker) process, MB (Linux: ``ru_maxrss`` KB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one_process_iai_infer(source: Path, scratch: Path) -> tuple[float, float]:
    """``(wall seconds, posterior-phase groups / s)`` of the grouped ``iai infer`` in one
    single-threaded process on the partitions gathered into one Parquet file."""
    whole = scratch / "all.parquet"
    pd.concat([pd.read_parquet(p) for p in sorted(source.glob("*.parquet"))]).to_parquet(whole)
    command = [sys.executable, "-m", "iai_prob.cli", "infer", "linear_regression", str(whole)]
    command += ["--x", "x0:x7", "--y", "y", "--group", "group", "--out", str(scratch / "o.nc")]
    command += ["--num-samples", "100", "--show", "0", "--no-progress"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    rate = re.search(r"\(([\d,]+) groups/s", done.stderr)
    return wall, float(rate.group(1).replace(",", "")) if rate else float("nan")


def _training_steps_per_second(nproc: int, steps: int, scratch: Path) -> float:
    """Meta-training steps / s of ``iai train linear_regression --nproc nproc``: the
    in-run seconds of ``steps`` steps minus those of 5, over ``steps − 5``."""
    seconds = {}
    for count in (5, steps):
        out = scratch / f"train-{nproc}-{count}"
        command = [sys.executable, "-m", "iai_prob.cli", "train", "linear_regression"]
        command += ["--steps", str(count), "--tasks-per-step", "32", "--nproc", str(nproc)]
        command += ["--no-progress", "--out", str(out)]
        environment = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(command, env=environment, capture_output=True, check=True)
        seconds[count] = json.loads((out / "last.json").read_text())["seconds"]
    return (steps - 5) / (seconds[steps] - seconds[5])


def _warm_worker(checkpoint: str) -> None:
    """Import torch and load the guide in a worker (what its first partition would do)."""
    from iai_prob.distributed.batch_inference import _cached_guide

    _cached_guide(checkpoint, "cpu")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--min-points", type=int, default=16)
    parser.add_argument("--max-points", type=int, default=64)
    parser.add_argument(
        "--train-steps", type=int, default=25, help="training steps timed per process count"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2,000 groups in 4 partitions, 8 training steps"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    return parser


def main(argv=None) -> int:
    from distributed import Client, LocalCluster

    from iai_prob.distributed.batch_inference import run_batch_inference

    options = _parser().parse_args(argv)
    if options.quick:
        options.groups, options.partitions, options.train_steps = 2_000, 4, 8
    workers = [int(w) for w in options.workers.split(",")]
    checkpoint = str(resources.files("iai_prob.pretrained") / "linear_regression")
    scratch = Path(tempfile.mkdtemp(prefix="iai_distributed_"))
    free = (os.cpu_count() or 1) - os.getloadavg()[0]
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
            f"{options.partitions} partitions; LocalCluster, 1 thread per worker process; "
            f"{os.cpu_count()} CPUs, {free:.1f} free at the start (CPUs − load average).",
            "",
            "| workers | start-up s | seconds | groups / s | speed-up | worker CPU s "
            "| groups / CPU s | peak memory / worker | max error (sd) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
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
                memory = max(client.run(_peak_memory_mb).values())
            assert result.num_groups == options.groups and result.workers == count
            error = _check_sample(family, scratch / "in", scratch / f"out-{count}")
            baseline = baseline or result.groups_per_second
            lines.append(
                f"| {count} | {startup:.1f} | {result.seconds:.1f} | "
                f"{result.groups_per_second:,.0f} | {result.groups_per_second / baseline:.2f} | "
                f"{cpu:.1f} | {result.num_groups / cpu:,.0f} | {memory:,.0f} MB | {error:.3f} |"
            )
            print(lines[-1], flush=True)
        wall, rate = _one_process_iai_infer(scratch / "in", scratch)
        lines += [
            "",
            f"One process, `iai infer --group` on the same {options.groups:,} groups in one "
            f"Parquet file: {wall:.1f} s end to end ({options.groups / wall:,.0f} groups / s "
            f"with reading and 100 draws per group written), posterior phase {rate:,.0f} "
            "groups / s.",
            "",
            "| torchrun processes | training steps / s (32 tasks per step in all) | speed-up |",
            "|---:|---:|---:|",
        ]
        print(lines[-5], flush=True)
        rates = [_training_steps_per_second(n, options.train_steps, scratch) for n in (1, 2)]
        for nproc, steps_per_second in zip((1, 2), rates, strict=True):
            lines.append(
                f"| {nproc} | {steps_per_second:.2f} | {steps_per_second / rates[0]:.2f} |"
            )
        table = "\n".join(lines)
        print("\n" + table)
        if options.out is not None:
            options.out.write_text(table + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
