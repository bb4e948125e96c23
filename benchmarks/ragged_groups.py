"""Groups of many sizes in one file: padded batches against batches of one size.

    python benchmarks/ragged_groups.py                     # 10,000 groups of 5 to 500 rows
    python benchmarks/ragged_groups.py --groups 100000     # the issue's file (25 M rows)

Writes ``--groups`` linear-regression datasets (the shipped ``linear_regression`` guide's
family, ``d = 8``, ``N`` uniform on ``--min-rows … --max-rows``) as one CSV with a group
column, then answers every group with the guide's default answer (encoder start and
convergence phase, with its PSIS ``k̂``):

1. **PyTorch, from the CSV** (:func:`iai_prob.io.grouped_posteriors`, what
   ``iai infer --group`` runs): groups padded together to the sizes ``⌈1.25^k⌉``
   (the default) against one call per distinct size (the batching before padding), in
   the same process; then ``iai infer --group`` end to end (a fresh process: imports,
   reading, posteriors, the spread check and the netCDF file).
2. **Same answers**: ``--check`` groups drawn at random, each answered alone
   (``guide.posterior(x, y)``) against its padded-batch answer.
3. **NumPyro** (``IterativeAmortizedGuide.padded_posterior``): the same groups read from
   the CSV in padded batches of ``--max-tasks`` groups (the last batch of a padded size
   filled up with copies of its first group, so that every batch of a size has one shape
   and compiles once), against batches of one size for the first ``--numpyro-sizes``
   distinct sizes (each new ``N`` compiles again).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Report, base_parser, limit_threads, markdown_table, verdict

AGREEMENT = 1e-4
"""Largest difference of a posterior mean allowed between a padded batch and alone."""


def write_groups(path: Path, *, groups: int, low: int, high: int, seed: int = 0) -> np.ndarray:
    """``groups`` simulated datasets of ``U{low … high}`` rows as one CSV; their sizes."""
    from iai_prob.models import LinearRegression

    family = LinearRegression(dim=8, noise_scale=0.5)
    rng = np.random.default_rng(seed)
    sizes = rng.integers(low, high + 1, groups)
    generator = torch.Generator().manual_seed(seed)
    w = family.prior_scale * torch.randn(groups, 8, generator=generator)
    owner = np.repeat(np.arange(groups), sizes)
    x = torch.randn(len(owner), 8, generator=generator)
    y = (x * w[owner]).sum(-1) + 0.5 * torch.randn(len(owner), generator=generator)
    frame = pd.DataFrame(x.numpy(), columns=[f"x{i}" for i in range(8)])
    frame["y"] = y.numpy()
    frame["g"] = owner
    frame.to_csv(path, index=False, float_format="%.6g")
    return sizes


def per_size_answers(guide, data, max_tasks: int):
    """The default answer with one call per distinct size (no padding)."""
    from iai_prob.io.grouped import size_batches

    means = torch.empty(len(data.keys), guide.latent_dim)
    for members, _ in size_batches(data.sizes, max_tasks, padded=False):
        means[members] = guide.posterior(*data.stack(members)).mean
    return means


def pytorch_section(report, guide, csv: Path, sizes, args):
    from iai_prob.io import Columns, Table, grouped_posteriors
    from iai_prob.io.grouped import padded_size, read_groups

    columns = Columns.of([f"x{i}" for i in range(8)], "y", guide=guide)
    table = Table(csv)
    started = time.perf_counter()
    padded = grouped_posteriors(guide, table, columns, group="g", max_tasks=args.max_tasks)
    padded_total = time.perf_counter() - started
    data = read_groups(table, columns, "g")
    started = time.perf_counter()
    per_size = per_size_answers(guide, data, args.max_tasks)
    per_size_seconds = time.perf_counter() - started
    difference = float((per_size - padded.posterior.mean).abs().max())
    distinct = len(np.unique(sizes))
    padded_sizes = len({padded_size(int(n)) for n in sizes})
    rows = [
        [
            "padded to ⌈1.25^k⌉ rows (default)",
            padded_sizes,
            f"{padded.read_seconds:.1f} s",
            f"{padded.seconds:.1f} s",
            f"{padded.groups_per_second:,.0f}",
            f"{len(sizes) / padded_total:,.0f}",
        ],
        [
            "one size per call",
            distinct,
            "(same rows)",
            f"{per_size_seconds:.1f} s",
            f"{len(sizes) / per_size_seconds:,.0f}",
            "-",
        ],
    ]
    report.add(f"### 1. PyTorch: {len(sizes):,} groups of {sizes.min()}–{sizes.max()} rows\n")
    report.add(
        markdown_table(
            [
                "batches",
                "shapes",
                "read CSV",
                "posteriors",
                "groups/s (posteriors)",
                "groups/s (read + posteriors)",
            ],
            rows,
        )
    )
    report.add(
        f"\n- padded ÷ one size per call: {per_size_seconds / padded.seconds:.1f}x faster; "
        f"largest difference of a posterior mean between the two: {difference:.1e}\n"
        f"- converged: {int(padded.status.converged.sum()):,} of {len(sizes):,}; "
        f"k̂ > 0.7: {int((padded.status.khat > 0.7).sum())}\n"
    )
    return padded


def cli_section(report, csv: Path, groups: int, threads: int):
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable,
            "-m",
            "iai_prob.cli",
            "infer",
            "linear_regression",
            str(csv),
            "--x",
            "x0:x7",
            "--y",
            "y",
            "--group",
            "g",
            "--out",
            str(Path(folder) / "groups.nc"),
            "--no-progress",
        ]
        started = time.perf_counter()
        done = subprocess.run(
            command, capture_output=True, text=True, env=_thread_env(threads), check=False
        )
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"iai infer failed: {done.stderr[-2000:]}")
    said = [line for line in done.stderr.splitlines() if "groups of" in line]
    report.add("### iai infer --group, end to end (a fresh process)\n")
    report.add(
        markdown_table(
            ["command", "wall", "groups/s end to end", "its own line"],
            [
                [
                    f"iai infer … --group g ({groups:,} groups)",
                    f"{wall:.1f} s",
                    f"{groups / wall:,.0f}",
                    said[0] if said else "-",
                ]
            ],
        )
        + "\n"
    )


def _thread_env(threads: int) -> dict:
    import os

    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env


def agreement_section(report, guide, padded, checks: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(padded.keys), size=min(checks, len(padded.keys)), replace=False)
    mean_gap = cov_gap = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index in chosen:
            alone = guide.posterior(*padded.data.group(int(index)))
            mean_gap = max(mean_gap, float((alone.mean - padded.posterior.mean[index]).abs().max()))
            cov_gap = max(
                cov_gap,
                float(
                    (alone.covariance_matrix - padded.posterior.covariance_matrix[index])
                    .abs()
                    .max()
                ),
            )
    report.add(f"### 2. Padded batch against each group alone ({len(chosen)} groups drawn)\n")
    report.add(
        markdown_table(
            ["backend", "max \\|Δ mean\\|", "max \\|Δ covariance\\|", f"≤ {AGREEMENT:g}"],
            [["PyTorch", f"{mean_gap:.1e}", f"{cov_gap:.1e}", verdict(mean_gap <= AGREEMENT)]],
        )
        + "\n"
    )


def numpyro_section(report, csv: Path, args):
    import jax
    import jax.numpy as jnp

    from iai_prob.io import Columns, Table
    from iai_prob.io.grouped import read_groups, size_batches
    from iai_prob.numpyro import pretrained
    from iai_prob.numpyro.convergence import TRACE_COUNTS
    from iai_prob.numpyro.guide import TRACE_COUNTS as REFINE_COUNTS

    guide, params = pretrained.load("linear_regression")
    columns = Columns.of([f"x{i}" for i in range(8)], "y")

    def compiles():
        return REFINE_COUNTS["refine"] + TRACE_COUNTS["converge"] + TRACE_COUNTS["khat"]

    started = time.perf_counter()
    data = read_groups(Table(csv), columns, "g")
    read_seconds = time.perf_counter() - started
    means = np.empty((len(data.keys), 8))
    before, first_calls, first_groups, started = compiles(), 0.0, 0, time.perf_counter()
    shapes = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for members, rows in size_batches(data.sizes, args.max_tasks, padded=True):
            filled = np.concatenate(
                [members, np.repeat(members[:1], args.max_tasks - len(members))]
            )
            x, y = data.stack(filled, rows)
            call = time.perf_counter()
            posterior = guide.padded_posterior(
                params, jnp.asarray(x.numpy()), jnp.asarray(y.numpy()), sizes=data.sizes[filled]
            )
            means[members] = np.asarray(posterior.mean)[: len(members)]
            if rows not in shapes:  # the call that compiles this shape
                first_calls += time.perf_counter() - call
                first_groups += len(members)
                shapes.add(rows)
    padded_seconds = time.perf_counter() - started
    padded_compiles = compiles() - before
    steady, steady_groups = padded_seconds - first_calls, len(data.keys) - first_groups
    # one size per call, for the first sizes: each new N compiles
    distinct = np.unique(data.sizes)[: args.numpyro_sizes]
    before, started, timed_groups = compiles(), time.perf_counter(), 0
    gap = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for size in distinct:
            members = np.flatnonzero(data.sizes == size)[: args.max_tasks]
            x, y = data.stack(members)
            posterior = guide.posterior(params, jnp.asarray(x.numpy()), jnp.asarray(y.numpy()))
            gap = max(gap, float(np.abs(np.asarray(posterior.mean) - means[members]).max()))
            timed_groups += len(members)
    per_size_seconds = time.perf_counter() - started
    per_size_compiles = compiles() - before
    report.add(f"### 3. NumPyro ({jax.default_backend()}), the same {len(data.keys):,} groups\n")
    report.add(
        markdown_table(
            ["batches", "calls' shapes", "compilations", "time", "groups/s"],
            [
                [
                    f"padded, {args.max_tasks} groups a call (read {read_seconds:.1f} s)",
                    len(shapes),
                    padded_compiles,
                    f"{padded_seconds:.1f} s ({first_calls:.1f} s in first calls)",
                    f"{len(data.keys) / padded_seconds:,.0f} ("
                    + (f"{steady_groups / steady:,.0f}" if steady_groups else "no call")
                    + " after the first calls)",
                ],
                [
                    f"one size per call, first {len(distinct)} sizes only",
                    len(distinct),
                    per_size_compiles,
                    f"{per_size_seconds:.1f} s",
                    f"{timed_groups / per_size_seconds:,.0f}",
                ],
            ],
        )
    )
    report.add(
        f"\n- NumPyro padded against one size per call: largest difference of a posterior "
        f"mean {gap:.1e} ({verdict(gap <= AGREEMENT)} at ≤ {AGREEMENT:g}); "
        f"{len(np.unique(data.sizes))} distinct sizes in the file would each compile once "
        "without padding\n"
    )


def main(argv=None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--min-rows", type=int, default=5)
    parser.add_argument("--max-rows", type=int, default=500)
    parser.add_argument("--max-tasks", type=int, default=256, help="groups per call")
    parser.add_argument("--check", type=int, default=100, help="groups answered alone")
    parser.add_argument("--numpyro-sizes", type=int, default=8, help="sizes one call each")
    parser.add_argument("--no-numpyro", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.groups, args.check, args.numpyro_sizes = 600, 20, 3
    limit_threads(args.threads)
    from iai_prob import pretrained

    report = Report()
    guide = pretrained.load("linear_regression")
    with tempfile.TemporaryDirectory() as folder:
        csv = Path(folder) / "groups.csv"
        started = time.perf_counter()
        sizes = write_groups(csv, groups=args.groups, low=args.min_rows, high=args.max_rows)
        report.add(
            f"{args.groups:,} groups, {int(sizes.sum()):,} rows, "
            f"{len(np.unique(sizes))} distinct sizes; CSV of "
            f"{csv.stat().st_size / 2**20:,.0f} MiB written in "
            f"{time.perf_counter() - started:.1f} s; {args.threads} thread(s)\n"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            padded = pytorch_section(report, guide, csv, sizes, args)
        agreement_section(report, guide, padded, args.check)
        cli_section(report, csv, args.groups, args.threads)
        if not args.no_numpyro:
            numpyro_section(report, csv, args)
    report.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
