"""Section 6: stability over many held-out tasks: no NaN or non-PD posterior may come
back silently."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from common import (
    HELD_OUT_SEED,
    verdict,
)
from torch.distributions import MultivariateNormal, kl_divergence

from iai_prob.inference import RefinementError

from .shared import Settings, Table, duration, held_out, median, nats

COUNTERS = ("drawn", "run", "non_finite", "non_pd", "refinement_errors")


@dataclass
class StabilityCounts:
    """Outcomes of the stability section for one range of N."""

    drawn: int = 0
    run: int = 0
    non_finite: int = 0
    non_pd: int = 0
    refinement_errors: int = 0
    other_errors: dict = field(default_factory=dict)
    kls: list = field(default_factory=list)

    def silent(self) -> int:
        return self.non_finite + self.non_pd

    def merge(self, other: StabilityCounts) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, count in other.other_errors.items():
            self.other_errors[name] = self.other_errors.get(name, 0) + count
        self.kls += other.kls

    def cells(self) -> list:
        kls = torch.cat(self.kls) if self.kls else torch.tensor([math.nan])
        return [
            *(getattr(self, name) for name in COUNTERS),
            self.other_errors or 0,
            nats(median(kls)),
        ]


def stability_plan(settings: Settings) -> dict[int, tuple[int, int]]:
    """``{N: (tasks drawn, tasks run)}``: N log-uniform on the range, rounded to a log grid,
    and at most ``stability_points / grid`` points run per grid value (at least 4 tasks)."""
    low, high = settings.stability_range
    generator = torch.Generator().manual_seed(HELD_OUT_SEED + 17)
    draws = torch.empty(settings.stability_tasks).uniform_(
        math.log(low), math.log(high), generator=generator
    )
    grid = torch.linspace(math.log(low), math.log(high), settings.stability_grid)
    nearest = (draws[:, None] - grid[None, :]).abs().argmin(dim=1)
    counts = torch.bincount(nearest, minlength=len(grid))
    cap = settings.stability_points // settings.stability_grid
    plan = {}
    for log_n, count in zip(grid.tolist(), counts.tolist(), strict=True):
        if count:
            num_points = round(math.exp(log_n))
            plan[num_points] = (count, min(count, max(4, cap // num_points)))
    return plan


def check_posterior(guide, x, y, counts: StabilityCounts) -> None:
    """Run ``guide.posterior`` on a batch of tasks and record what came back."""
    try:
        q = guide.posterior(x, y)
    except RefinementError:
        counts.refinement_errors += len(x)
        return
    except Exception as error:  # reported, so not silent, but not the documented error
        name = type(error).__name__
        counts.other_errors[name] = counts.other_errors.get(name, 0) + len(x)
        return
    finite = torch.isfinite(q.loc).all(-1) & torch.isfinite(q.precision_matrix).all((-1, -2))
    positive = torch.linalg.cholesky_ex(torch.nan_to_num(q.precision_matrix))[1] == 0
    counts.non_finite += int((~finite).sum())
    counts.non_pd += int((finite & ~positive).sum())
    good = finite & positive
    if good.any():
        exact = guide.family.exact_posterior(x[good], y[good])
        q_good = MultivariateNormal(q.loc[good], precision_matrix=q.precision_matrix[good])
        counts.kls.append(kl_divergence(q_good, exact))


def _decade(num_points: int) -> str:
    """``10^p < N ≤ 10^(p+1)`` (upper bound included, so N = 10^5 joins 10^4 … 10^5)."""
    power = int(math.log10(num_points - 1))
    return f"10^{power} < N ≤ 10^{power + 1}"


def stability_table(guide, settings: Settings) -> Table:
    """Section 6: count silent failures over many held-out tasks."""
    ranges: dict[str, StabilityCounts] = {}
    started = time.perf_counter()
    for num_points, (drawn, run) in stability_plan(settings).items():
        counts = ranges.setdefault(_decade(num_points), StabilityCounts())
        counts.drawn, counts.run = counts.drawn + drawn, counts.run + run
        chunk = max(1, min(256, settings.stability_chunk_points // num_points))
        for salt, start in enumerate(range(0, run, chunk)):
            x, y = held_out(guide.family, min(chunk, run - start), num_points, salt=100 + salt)
            check_posterior(guide, x, y, counts)
    spent = time.perf_counter() - started
    table = Table(
        "6. Stability: held-out tasks with N log-uniform on "
        f"[{settings.stability_range[0]}, {settings.stability_range[1]:,}]",
        [
            "N range",
            "tasks drawn",
            "tasks run",
            "NaN/inf returned",
            "non-PD returned",
            "RefinementError",
            "other exceptions",
            "median KL",
        ],
    )
    total = StabilityCounts()
    for label, counts in ranges.items():
        table.add(label, *counts.cells())
        total.merge(counts)
    table.add("all", *total.cells())
    cap = settings.stability_points // settings.stability_grid
    table.notes += [
        f"target: zero silent failures (NaN/inf or non-PD posteriors returned): "
        f"{total.silent()} -> {verdict(total.silent() == 0)}",
        f"N drawn log-uniformly for {settings.stability_tasks:,} tasks, rounded to "
        f"{settings.stability_grid} log-spaced values so that tasks of equal N run as one "
        f"batch (guide.posterior(x, y)); at most {cap:,} points per value (at least 4 tasks), "
        "so large N run fewer tasks than drawn (--tasks changes the number drawn)",
        "a RefinementError fails its whole batch: the column counts the tasks of failed "
        f"batches; section time {duration(spent)}",
    ]
    return table
