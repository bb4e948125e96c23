"""Many small datasets in one CSV: one posterior per group with the shipped guide.

    python examples/grouped_csv.py --groups 2000 --out runs/grouped

Writes a CSV of ``--groups`` datasets (8 to 64 rows each, each with its own weights,
drawn from the family the shipped ``linear_regression`` guide was trained for), then
computes every group's posterior through :func:`iai_prob.io.grouped_posteriors`
(groups padded together and batched as tasks), checks them against the exact posteriors, and
times a plain Python loop over the first groups for comparison. The same from the
shell: ``iai infer linear_regression FILE --x x0:x7 --y y --group unit --out post.nc``.
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from iai_prob import pretrained
from iai_prob.io import Columns, Table, grouped_posteriors


def write_groups(path: Path, family, num_groups: int, sizes=(8, 64), seed: int = 0) -> None:
    """A CSV with columns ``unit, x0 … x7, y``: ``num_groups`` datasets, rows shuffled."""
    generator = torch.Generator().manual_seed(seed)
    frames = []
    for index in range(num_groups):
        size = int(torch.randint(sizes[0], sizes[1] + 1, (), generator=generator))
        _, x, y = family.sample(1, size, generator=generator)
        frame = pd.DataFrame(x[0].numpy(), columns=[f"x{i}" for i in range(family.dim)])
        frame.insert(0, "unit", f"u{index:05d}")
        frame["y"] = y[0].numpy()
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame.iloc[np.random.default_rng(seed).permutation(len(frame))].to_csv(path, index=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=2000)
    parser.add_argument("--loop-groups", type=int, default=100, help="groups timed one by one")
    parser.add_argument("--out", default="runs/grouped")
    args = parser.parse_args(argv)

    guide = pretrained.load("linear_regression")
    family = guide.family
    path = Path(args.out) / "groups.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_groups(path, family, args.groups)
    table = Table(path)
    columns = Columns.of([f"x{i}" for i in range(family.dim)], "y", guide=guide)
    result = grouped_posteriors(guide, table, columns, group="unit", progress=True)

    kls = []
    for index in range(len(result.keys)):
        exact = family.exact_posterior(*result.data.group(index))
        q = torch.distributions.MultivariateNormal(
            result.posterior.loc[index], scale_tril=result.posterior.scale_tril[index]
        )
        kls.append(float(torch.distributions.kl_divergence(q, exact)))
    loop = min(args.loop_groups, len(result.keys))
    started = time.perf_counter()
    for index in range(loop):
        guide.posterior(*result.data.group(index))
    loop_rate = loop / (time.perf_counter() - started)

    print(f"{table.num_rows} rows, {len(result.keys)} groups of {result.sizes.min()} to "
          f"{result.sizes.max()} rows; read in {result.read_seconds:.2f} s")  # fmt: skip
    print(f"batched as tasks: {result.groups_per_second:.0f} groups/s; one call per group: "
          f"{loop_rate:.0f} groups/s")  # fmt: skip
    print(f"KL(q || exact) over groups: median {statistics.median(kls):.4f}, "
          f"90th percentile {np.quantile(kls, 0.9):.4f}, max {max(kls):.4f} nats")  # fmt: skip
    return result, kls


if __name__ == "__main__":
    main()
