"""Section 5: peak memory while streaming 10^4 … 10^6 points from a generator, one fresh
subprocess per N."""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from common import (
    HELD_OUT_SEED,
    load_guide,
    verdict,
)
from torch.distributions import MultivariateNormal

from iai_prob.models import LinearRegression

from .shared import PRETRAINED, Settings, Table, duration, gaussian_kl, nats, timed

SCRIPT = Path(__file__).resolve().parent.parent / "linear_regression.py"
"""The benchmark's command, which runs each memory worker in a fresh process."""


class RegressionStream:
    """Mini-batches of one synthetic dataset, drawn on the fly.

    Iterating accumulates ``XᵀX`` and ``Xᵀy`` (float64), so the exact posterior of the
    whole stream is known afterwards without holding its ``N`` points.
    """

    def __init__(self, family: LinearRegression, num_points: int, batch_size: int, seed: int):
        self.family, self.num_points, self.batch_size, self.seed = (
            family,
            num_points,
            batch_size,
            seed,
        )
        self.gram = torch.zeros(family.dim, family.dim, dtype=torch.float64)
        self.moment = torch.zeros(family.dim, dtype=torch.float64)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        family, generator = self.family, torch.Generator().manual_seed(self.seed)
        weights = family.prior_scale * torch.randn(family.dim, generator=generator)
        self.gram.zero_()
        self.moment.zero_()
        for start in range(0, self.num_points, self.batch_size):
            size = min(self.batch_size, self.num_points - start)
            x = torch.randn(size, family.dim, generator=generator)
            y = x @ weights + family.noise_scale * torch.randn(size, generator=generator)
            self.gram += x.double().T @ x.double()
            self.moment += x.double().T @ y.double()
            yield x, y

    def exact_posterior(self) -> MultivariateNormal:
        noise_precision = self.family.noise_scale**-2
        eye = torch.eye(self.family.dim, dtype=torch.float64)
        precision = eye / self.family.prior_scale**2 + noise_precision * self.gram
        loc = torch.linalg.solve(precision, noise_precision * self.moment)
        return MultivariateNormal(loc, precision_matrix=precision)


def _status_mib(key: str) -> float:
    """A ``/proc/self/status`` entry (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def memory_worker(num_points: int, batch_size: int, guide_path: Path | None) -> dict:
    """Stream ``num_points`` points through the guide in this process; report memory."""
    guide = load_guide(PRETRAINED, guide_path)
    stream = RegressionStream(guide.family, num_points, batch_size, HELD_OUT_SEED + 13)
    before = _status_mib("VmRSS")
    q, spent = timed(guide.refine, iter(stream), num_points=num_points)
    return {
        "rss_before": before,
        "vm_hwm": _status_mib("VmHWM"),
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": spent,
        "kl": gaussian_kl(q, stream.exact_posterior()),
    }


def _worker_command(args, num_points: int, settings: Settings) -> list[str]:
    command = [sys.executable, str(SCRIPT), "--memory-worker", str(num_points)]
    command += ["--stream-batch", str(settings.stream_batch), "--threads", str(args.threads)]
    return command + (["--guide", str(args.guide)] if args.guide else [])


def memory_table(args, settings: Settings) -> Table:
    """Section 5: peak RSS while streaming, one fresh subprocess per N."""
    table = Table(
        "5. Memory while streaming from a generator (fresh process per N)",
        [
            "N",
            "mini-batches",
            "peak RSS (VmHWM)",
            "RSS before streaming",
            "peak − before",
            "ru_maxrss",
            "time",
            "KL(q ‖ exact)",
        ],
    )
    peaks = []
    for num_points in settings.memory_sizes:
        command = _worker_command(args, num_points, settings)
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        report = json.loads(output.strip().splitlines()[-1])
        peaks.append(report["vm_hwm"])
        table.add(
            f"{num_points:,}",
            math.ceil(num_points / settings.stream_batch),
            f"{report['vm_hwm']:.0f} MiB",
            f"{report['rss_before']:.0f} MiB",
            f"{report['vm_hwm'] - report['rss_before']:.1f} MiB",
            f"{report['ru_maxrss']:.0f} MiB",
            duration(report["seconds"]),
            nats(report["kl"]),
        )
    spread = (max(peaks) - min(peaks)) / min(peaks)
    table.notes += [
        f"target: peak RSS (VmHWM) flat within {settings.memory_tolerance:.0%} from N = "
        f"{settings.memory_sizes[0]:,} to {settings.memory_sizes[-1]:,}: spread "
        f"{spread:.1%} -> {verdict(spread <= settings.memory_tolerance)}",
        f"guide.refine(iter(generator), num_points=N), mini-batches of {settings.stream_batch} "
        "drawn inside the generator; the exact posterior comes from XᵀX and Xᵀy accumulated "
        "(float64) in the same generator",
        "ru_maxrss is shown but not used: on Linux a child keeps the parent's peak RSS across "
        "fork + exec, so it reports the benchmark process's peak, not the worker's",
    ]
    return table
