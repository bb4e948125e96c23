"""Helpers shared by the benchmarks that compare a pretrained guide with NumPyro NUTS.

* command line, thread limits and report output (:func:`base_parser`, :func:`limit_threads`,
  :class:`Report`);
* the guide side: loading, a timed posterior for a batch of tasks, seeded draws, chunked
  log importance weights (:func:`load_guide`, :func:`guide_state`, :func:`guide_draws`,
  :func:`chunked_log_weights`);
* the reference side: NUTS on every task of a batch (:func:`nuts_all`, :func:`compare`);
* metrics and tables: Markdown tables, PASS/MISS (:func:`markdown_table`, :func:`verdict`).

PSIS k̂, the jitted NumPyro NUTS reference and the classifier two-sample test live in
:mod:`iai_prob.diagnostics` (``psis_khat``, ``NutsReference``, ``c2st_accuracy``) and are
re-exported here for the benchmark scripts.

Held-out tasks are seeded from :data:`HELD_OUT_SEED` upwards, far above the seeds that
:func:`iai_prob.inference.fit` uses for training steps (``seed * 1_000_003 + step``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

# one implementation of k̂, the NUTS reference and C2ST: the library's diagnostics
from iai_prob.diagnostics import KHAT_THRESHOLD, NutsReference, c2st_accuracy, psis_khat

__all__ = ["KHAT_THRESHOLD", "NutsReference", "c2st_accuracy", "psis_khat"]  # re-exported

HELD_OUT_SEED = 1_000_000_000
"""Base seed of the held-out tasks (training seeds stay far below it)."""


# ------------------------------------------------------------------ command line / output
def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick``, ``--out``, ``--guide``, ``--threads``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke test (< 60 s)")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    parser.add_argument(
        "--guide",
        type=Path,
        default=None,
        help="a guide checkpoint (path stem) to use instead of the pretrained one",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch, XLA and BLAS (1 on a shared machine: tiny tensor "
        "operations slow down many times when threads outnumber free cores)",
    )
    return parser


def limit_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in torch, XLA (before JAX starts) and BLAS/OpenMP."""
    torch.set_num_threads(threads)
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false"  # a bare token would end XLA_FLAGS parsing
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


@dataclass
class Report:
    """Markdown sections printed as they come and optionally written to a file at the end."""

    sections: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        """Print ``text`` now and keep it for :meth:`save`."""
        print(text, flush=True)
        self.sections.append(text)

    def save(self, path: Path | None) -> None:
        """Write every section to ``path`` (nothing when ``path`` is ``None``)."""
        if path is not None:
            path.write_text("\n".join(self.sections) + "\n")
            print(f"wrote {path}", file=sys.stderr)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    """``PASS`` or ``MISS``."""
    return "PASS" if ok else "MISS"


def spread(values, digits: int = 2) -> str:
    """``median [10 %, 90 %]`` of ``values``."""
    low, mid, high = np.quantile(np.asarray(values, dtype=float), [0.1, 0.5, 0.9])
    return f"{mid:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def seconds(value: float) -> str:
    """A duration with three significant digits."""
    return f"{value:.3g} s"


@contextlib.contextmanager
def stopwatch():
    """``with stopwatch() as elapsed: ...``; ``elapsed()`` gives the seconds so far / taken."""
    started = time.perf_counter()
    finished: list[float] = []
    yield lambda: finished[0] if finished else time.perf_counter() - started
    finished.append(time.perf_counter() - started)


def held_out_tasks(family, num_tasks: int, num_points: int, offset: int = 0):
    """``(theta, x, y)`` for ``num_tasks`` seeded held-out tasks of ``num_points`` points."""
    generator = torch.Generator().manual_seed(HELD_OUT_SEED + offset + num_points)
    return family.sample(num_tasks, num_points, generator=generator)


# ------------------------------------------------------------------------------ the guide
def load_guide(name: str, path: Path | None):
    """The pretrained guide ``name``, or the guide checkpoint at ``path`` (for development).

    A checkpoint's card names the task family it was trained for, so it loads for that.
    """
    from iai_prob import pretrained
    from iai_prob.inference import IterativeAmortizedGuide
    from iai_prob.models import get_family

    if path is None:
        return pretrained.load(name)
    model = json.loads(path.with_suffix(".json").read_text())["model"]
    family = get_family(model["family"], **model["config"])
    return IterativeAmortizedGuide.load(path, family)


@torch.no_grad()
def guide_state(guide, *args):
    """``(prepared task, λ_K, seconds)`` for the data ``*args`` (one dataset or a batch)."""
    with stopwatch() as elapsed:
        task = guide.prepare(*args)
        state = guide.final_state(task)
    return task, state, elapsed()


def one_at_a_time(guide, x: torch.Tensor, y: torch.Tensor, count: int):
    """The guide on the first ``count`` datasets passed one at a time (unbatched).

    Returns their states stacked as one batch of ``count`` tasks and the median seconds.
    """
    runs = [guide_state(guide, x[t], y[t]) for t in range(min(count, len(x)))]
    states = [state for _, state, _ in runs]
    stacked = states[0]._replace(
        loc=torch.cat([s.loc for s in states]), precision=torch.cat([s.precision for s in states])
    )
    return stacked, float(np.median([taken for _, _, taken in runs]))


def posterior(guide, state):
    """The guide's Gaussian over the flat unconstrained latents, batch ``(T,)``."""
    return guide.refiner.family.distribution(state.loc, state.precision)


@torch.no_grad()
def guide_draws(guide, state, num_draws: int, seed: int) -> torch.Tensor:
    """``num_draws`` seeded draws of the unconstrained latents, ``(num_draws, T, D)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return posterior(guide, state).sample((num_draws,))


def task_slice(state, index: slice):
    """The refinement state of the tasks ``index``."""
    return state._replace(loc=state.loc[index], precision=state.precision[index])


@torch.no_grad()
def chunked_log_weights(
    guide, args: Sequence[torch.Tensor], state, num_draws: int, max_elements: int = 2**22
) -> torch.Tensor:
    """``importance_log_weights`` for a batch of tasks, a few tasks at a time.

    The log joint of ``num_draws`` draws on all ``T × N`` points at once would need
    ``num_draws × T × N`` entries (gigabytes at ``N = 16,384``); chunks of tasks keep it
    near ``max_elements``. Returns ``(num_draws, T)``.
    """
    from iai_prob.inference.evaluation import importance_log_weights

    num_tasks, num_points = args[0].shape[:2]
    chunk = max(1, max_elements // (num_draws * num_points))
    columns = []
    for start in range(0, num_tasks, chunk):
        index = slice(start, start + chunk)
        task = guide.prepare(*(a[index] for a in args))
        columns.append(
            importance_log_weights(guide, task, task_slice(state, index), num_draws, seed=start)
        )
    return torch.cat(columns, dim=1)


def khat_rows(khats: dict[int, np.ndarray], share_target: float = 0.9) -> list[list[object]]:
    """Table rows ``N | median k̂ | share k̂ < 0.7 | target | result`` per dataset size."""
    rows = []
    for n, khat in khats.items():
        share = float(np.mean(khat < KHAT_THRESHOLD))
        rows.append(
            [
                f"{n:,}",
                len(khat),
                f"{np.median(khat):.2f}",
                f"{share:.0%}",
                f"k̂ < {KHAT_THRESHOLD} on ≥ {share_target:.0%}",
                verdict(share >= share_target),
            ]
        )
    return rows


KHAT_HEADERS = ("N", "tasks", "median k̂", "share k̂ < 0.7", "target", "result")


# ---------------------------------------------------------------------------- NUTS (JAX)
@dataclass
class NutsResult:
    """NUTS on a batch of tasks: draws ``{site: (T, S, ...)}``, seconds per task ``(T,)``,
    compile seconds and the mean number of leapfrog steps per iteration."""

    draws: dict[str, np.ndarray]
    seconds: np.ndarray
    compile_seconds: float
    leapfrog_steps: float


def nuts_all(reference: NutsReference, args: Sequence[np.ndarray], seed: int) -> NutsResult:
    """Run ``reference`` on each task of the batched data ``args`` (task axis first), in turn."""
    compiled_before = reference.compile_seconds
    per_task, times, steps = [], [], []
    for t in range(len(args[0])):
        draws, taken, leapfrog = reference.run(seed + t, *(a[t] for a in args))
        per_task.append(draws)
        times.append(taken)
        steps.append(leapfrog)
    stacked = {k: np.stack([d[k] for d in per_task]) for k in per_task[0]}
    return NutsResult(
        stacked, np.array(times), reference.compile_seconds - compiled_before, float(np.mean(steps))
    )


@dataclass
class Comparison:
    """One dataset size: the held-out tasks, the guide's posterior and the NUTS reference."""

    num_points: int
    theta: dict[str, torch.Tensor]
    args: tuple[torch.Tensor, ...]
    task: object
    state: object
    guide_batched_seconds: float
    single_state: object
    guide_single_seconds: float
    nuts: NutsResult

    @property
    def num_tasks(self) -> int:
        return len(self.args[0])

    def timings(self) -> dict[str, float]:
        """Per-dataset seconds of the guide (batched and one at a time) and of NUTS."""
        return {
            "guide_batched": self.guide_batched_seconds / self.num_tasks,
            "guide_single": self.guide_single_seconds,
            "nuts": float(np.median(self.nuts.seconds)),
            "nuts_compile": self.nuts.compile_seconds,
        }


def compare(
    guide,
    reference: NutsReference,
    num_points: int,
    num_tasks: int,
    *,
    single_datasets: int,
    nuts_args: Callable[[torch.Tensor, torch.Tensor], tuple[np.ndarray, ...]],
) -> Comparison:
    """Draw held-out tasks of ``guide.family`` and infer them with the guide and with NUTS.

    The guide sees all tasks as one batch (timed) and the first ``single_datasets`` of
    them one at a time (states kept, median time), after one untimed warm-up call; NUTS
    runs once per task on ``nuts_args(x, y)`` (arrays with the task axis first).
    """
    theta, x, y = held_out_tasks(guide.family, num_tasks, num_points)
    guide_state(guide, x[:1], y[:1])  # warm-up: first-call costs are not the guide's speed
    task, state, batched = guide_state(guide, x, y)
    single_state, single = one_at_a_time(guide, x, y, single_datasets)
    nuts = nuts_all(reference, nuts_args(x, y), seed=HELD_OUT_SEED + num_points)
    return Comparison(num_points, theta, (x, y), task, state, batched, single_state, single, nuts)


# ----------------------------------------------------------------------- two-sample test
def timing_rows(timings: dict[int, dict[str, float]]) -> list[list[object]]:
    """Rows ``N | guide batched | guide one dataset | NUTS | NUTS compile | speed-up``."""
    rows = []
    for n, t in timings.items():
        rows.append(
            [
                f"{n:,}",
                seconds(t["guide_batched"]),
                seconds(t["guide_single"]),
                seconds(t["nuts"]),
                seconds(t["nuts_compile"]),
                f"{t['nuts'] / t['guide_single']:.1f}×",
            ]
        )
    return rows


TIMING_HEADERS = (
    "N",
    "guide s/dataset (batch of all tasks)",
    "guide s/dataset (one at a time, median)",
    "NUTS s/dataset (median)",
    "NUTS compile (once per N)",
    "NUTS ÷ guide (one at a time)",
)


def timing_section(results: dict, threads: int, wall_seconds: float) -> str:
    """The closing "Time per dataset" table of a guide-vs-NUTS benchmark."""
    timings = {n: comparison.timings() for n, (comparison, _) in results.items()}
    return (
        f"\n### Time per dataset ({threads} CPU thread(s))\n\n"
        + markdown_table(TIMING_HEADERS, timing_rows(timings))
        + f"\n\nTotal wall time {wall_seconds:.0f} s."
    )
