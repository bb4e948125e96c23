"""What every section of the linear-regression benchmark shares: its settings, the
tables it prints, the held-out tasks and their KL to the exact posterior, and the guides it
trains for comparison."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from common import (
    HELD_OUT_SEED,
    markdown_table,
)
from torch.distributions import MultivariateNormal, kl_divergence

from iai_prob.inference import IterativeAmortizedGuide, fit
from iai_prob.inference.objectives import kl_to_exact
from iai_prob.models import LinearRegression

PRETRAINED = "linear_regression"


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """Sizes of every section (``FULL`` follows the brief, ``QUICK`` is a smoke test)."""

    accuracy_sizes: tuple[int, ...] = (16, 64, 256)
    accuracy_tasks: int = 256
    accuracy_targets: tuple[float, float] = (0.1, 0.2)  # N <= 256, large N
    large_n: int = 16_384
    large_chunk: int = 32
    large_seconds: float = 90.0
    oneshot_steps: int | None = None  # None: the pretrained card's training steps
    step_sizes: tuple[tuple[int, int], ...] = ((1024, 256), (16_384, 256))  # 256 tasks: brief
    speed_n: int = 256
    speed_datasets: int = 4
    svi_learning_rates: tuple[float, ...] = (0.003, 0.01, 0.03)
    svi_max_steps: int = 3000
    numpyro_max_steps: int = 30_000
    svi_check_every: int = 10
    nuts_warmup: int = 500
    nuts_samples: int = 500
    speed_target: float = 100.0
    throughput_n: int = 128
    throughput_batches: tuple[int, ...] = (256, 1024)
    throughput_target: float = 10_000.0
    repeats: int = 3
    memory_sizes: tuple[int, ...] = (10**4, 10**5, 10**6)
    stream_batch: int = 1024
    memory_tolerance: float = 0.10
    stability_tasks: int = 10_000
    stability_range: tuple[int, int] = (16, 10**5)
    stability_grid: int = 25
    stability_points: int = 24_000_000
    stability_chunk_points: int = 2**20


FULL = Settings()
QUICK = Settings(
    accuracy_sizes=(16, 64),
    accuracy_tasks=16,
    large_n=1024,
    large_chunk=8,
    large_seconds=1.0,
    oneshot_steps=3,
    step_sizes=((256, 8), (1024, 8)),
    speed_n=64,
    speed_datasets=1,
    svi_learning_rates=(0.03,),
    svi_max_steps=100,
    numpyro_max_steps=100,
    nuts_warmup=50,
    nuts_samples=50,
    throughput_batches=(64,),
    repeats=1,
    memory_sizes=(10**3, 10**4),
    stream_batch=256,
    stability_tasks=64,
    stability_range=(16, 2048),
    stability_grid=6,
    stability_points=100_000,
)


# ----------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A Markdown table with a title and notes printed below it."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells) -> None:
        self.rows.append([str(cell) for cell in cells])

    def markdown(self) -> str:
        notes = "".join(f"\n- {note}" for note in self.notes)
        return f"### {self.title}\n\n{markdown_table(self.headers, self.rows)}\n{notes}\n"


def nats(value: float) -> str:
    return f"{value:.4f}"


def duration(value: float) -> str:
    """A duration with a unit that keeps three significant digits."""
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1.0:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def median(values) -> float:
    """The median (mean of the two middle values for an even count, unlike ``Tensor.median``)."""
    values = values if torch.is_tensor(values) else torch.tensor(list(values))
    return float(torch.quantile(values.double(), 0.5))


def timed(function: Callable, *args, **kwargs):
    """``(result, seconds)`` of one call."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def best_time(repeats: int, function: Callable, *args) -> float:
    """Median wall time of ``repeats`` calls ``function(*args)`` after one warm-up call."""
    function(*args)
    return median(timed(function, *args)[1] for _ in range(repeats))


# ------------------------------------------------------------------------------ tasks
def held_out(family: LinearRegression, num_tasks: int, num_points: int, salt: int = 0):
    """``(x, y)`` of ``num_tasks`` fresh tasks; seeded by the size and ``salt``."""
    seed = HELD_OUT_SEED + 1000 * num_points + salt
    _, x, y = family.sample(num_tasks, num_points, generator=torch.Generator().manual_seed(seed))
    return x, y


@torch.no_grad()
def kl_per_step(guide: IterativeAmortizedGuide, x, y) -> torch.Tensor:
    """``KL(q_k ‖ exact)`` after each step ``k`` of one pass, shape ``(K + 1, T)``."""
    family = guide.family
    task = guide.prepare(x, y)
    exact = family.exact_posterior(x, y)
    order = tuple(site.name for site in family.latent_sites)
    return torch.stack(
        [
            kl_to_exact(state, guide.refiner.family, task.layout, exact, site_order=order)
            for state, _ in guide.trajectory(task)
        ]
    )


@functools.lru_cache(maxsize=16)
def held_out_kl_per_step(guide, num_tasks: int, num_points: int, salt: int = 0):
    """Cached ``(kl_per_step, seconds)`` on the held-out tasks ``(num_tasks, num_points, salt)``
    (sections 1 and 2 share the N = 16,384 tasks)."""
    x, y = held_out(guide.family, num_tasks, num_points, salt)
    return timed(kl_per_step, guide, x, y)


def as_float64(q) -> MultivariateNormal:
    return MultivariateNormal(q.mean.double(), scale_tril=q.scale_tril.double())


def gaussian_kl(q, exact) -> float:
    """``KL(q ‖ exact)`` for two multivariate normals, in float64."""
    return float(kl_divergence(as_float64(q), as_float64(exact)))


# ------------------------------------------------------------------ 1. accuracy vs N
@dataclass
class TrainedHere:
    """A guide the benchmark trains itself: the guide, its ``fit`` options and seconds."""

    guide: IterativeAmortizedGuide
    options: dict
    seconds: float


def card_budget(guide: IterativeAmortizedGuide, settings: Settings) -> dict:
    """The ``fit`` options of the pretrained guide's card (``oneshot_steps`` overrides)."""
    budget = guide.card.get("budget", {})
    return {
        "steps": settings.oneshot_steps or budget.get("steps", 400),
        "tasks_per_step": budget.get("tasks_per_step", 32),
        "num_points": tuple(budget.get("num_points", (16, 256))),
        "objective": budget.get("objective", "mixed"),
        "learning_rate": budget.get("learning_rate", 3e-3),
    }


def train_here(guide: IterativeAmortizedGuide, settings: Settings, **options) -> TrainedHere:
    """A guide with the pretrained one's posterior family and batch size and ``options``,
    trained with the pretrained card's budget."""
    budget = card_budget(guide, settings)
    trained = IterativeAmortizedGuide(
        guide.family, family=guide.config["family"], batch_size=64, **options
    )
    result = fit(trained, guide.family, seed=0, progress=False, **budget)
    return TrainedHere(trained, budget, result.seconds)


def train_oneshot(guide: IterativeAmortizedGuide, settings: Settings) -> TrainedHere:
    """The same architecture with ``num_steps=0``; its ``context_size`` covers the largest N
    of section 1, so it sees every point."""
    context_size = max(*settings.accuracy_sizes, settings.large_n)
    return train_here(
        guide, settings, encoder="set_transformer", num_steps=0, context_size=context_size
    )


LEAN_GUIDE = {
    "encoder": "deep_sets",
    "encoder_options": {"hidden_dim": 32},
    "context_size": 32,
    "signals": ("grad",),
    "max_relinearizations": 0,
}
"""A guide built for speed (section 4): a small DeepSets encoder on 32 context points, steps
that see only the gradient signal (no encoder pass per mini-batch) and no re-linearization
(the Gaussian likelihood's target does not depend on where it is linearized)."""
