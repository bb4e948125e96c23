"""One dataset larger than the guide's training context, streamed from a Parquet file.

    python examples/streaming_parquet.py --rows 100000 --out runs/stream

Writes ``--rows`` rows of one Bayesian linear regression (d = 8) to Parquet, streams
them through the shipped ``linear_regression`` guide (trained on at most 256 points) in
mini-batches of 64 with :func:`iai_prob.io.stream_posterior` (constant memory: chunks of
``--chunk-rows`` rows), and compares with the exact posterior, whose sufficient
statistics ``XᵀX`` and ``Xᵀy`` are accumulated over the same chunks. The same from the
shell: ``iai infer linear_regression FILE --x x0:x7 --y y --out post.nc``.
"""

import argparse
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from iai_prob import pretrained
from iai_prob.io import Columns, Table, stream_posterior


def write_parquet(path: Path, family, rows: int, *, chunk: int = 100_000, seed: int = 0):
    """``rows`` rows of one task, written chunk by chunk; returns the true weights."""
    generator = torch.Generator().manual_seed(seed)
    w = family.prior_scale * torch.randn(family.dim, generator=generator)
    names = [f"x{i}" for i in range(family.dim)] + ["y"]
    with pq.ParquetWriter(path, pa.schema([(n, pa.float32()) for n in names])) as writer:
        for start in range(0, rows, chunk):
            size = min(chunk, rows - start)
            x = torch.randn(size, family.dim, generator=generator)
            y = x @ w + family.noise_scale * torch.randn(size, generator=generator)
            values = torch.cat([x, y[:, None]], -1).numpy()
            writer.write_table(pa.table({n: values[:, i] for i, n in enumerate(names)}))
    return w


def exact_posterior(table: Table, columns: Columns, family):
    """The conjugate posterior from ``XᵀX`` and ``Xᵀy`` accumulated chunk by chunk."""
    precision = torch.eye(family.dim, dtype=torch.float64) / family.prior_scale**2
    linear = torch.zeros(family.dim, dtype=torch.float64)
    for frame in table.chunks(columns.names):
        x, y = (t.double() for t in columns.tensors(frame))
        precision += x.T @ x / family.noise_scale**2
        linear += x.T @ y / family.noise_scale**2
    covariance = torch.linalg.inv(precision)
    return torch.distributions.MultivariateNormal(covariance @ linear, covariance)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk-rows", type=int, default=65_536)
    parser.add_argument("--out", default="runs/stream")
    args = parser.parse_args(argv)

    guide = pretrained.load("linear_regression")
    family = guide.family
    path = Path(args.out) / "big.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    true_w = write_parquet(path, family, args.rows)
    table = Table(path, chunk_rows=args.chunk_rows)
    columns = Columns.of([f"x{i}" for i in range(family.dim)], "y", guide=guide)
    started = time.perf_counter()
    result = stream_posterior(guide, table, columns, progress=True)
    seconds = time.perf_counter() - started
    exact = exact_posterior(table, columns, family)
    q = torch.distributions.MultivariateNormal(
        result.posterior.mean.double(), result.posterior.covariance_matrix.double()
    )
    kl = float(torch.distributions.kl_divergence(q, exact))
    error = float((result.posterior.mean - true_w).abs().max())
    print(f"{args.rows} rows streamed in {seconds:.1f} s ({args.rows / seconds:.0f} rows/s)")
    print(f"KL(q || exact) = {kl:.4f} nats; max |mean - true w| = {error:.4f}")
    return kl


if __name__ == "__main__":
    main()
