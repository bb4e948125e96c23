"""Benchmark the pretrained ``linear_regression`` guide against its targets.

    python benchmarks/linear_regression.py            # full run (about 13 minutes on 2 busy cores)
    python benchmarks/linear_regression.py --quick    # smoke test, tiny sizes (< 60 s)
    python benchmarks/linear_regression.py --sections 1,4 --out results.md

Six sections, each printed as a Markdown table with the measured numbers and a PASS/MISS
column against the library's target (see ``benchmarks/README.md``):

1. accuracy vs N (median KL to the exact posterior), with a one-shot (``num_steps=0``)
   baseline of the same architecture trained here;
2. median KL after each refinement step of one pass (must not increase);
3. time to posterior per dataset vs Pyro SVI, NumPyro SVI and NumPyro NUTS;
4. batched throughput (datasets per second);
5. peak memory while streaming 10^4 … 10^6 points from a generator (one subprocess each);
6. stability over many held-out tasks (no NaN or non-PD posterior may come back silently).

Held-out tasks are drawn from seeds far from the training seeds (``fit`` seeds step ``s``
of a run with seed ``r`` by ``r * 1_000_003 + s``). Timings are only compared within one
run (the machine is shared), as ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from common import (
    HELD_OUT_SEED,
    NutsReference,
    Report,
    base_parser,
    limit_threads,
    load_guide,
    markdown_table,
    verdict,
)
from torch.distributions import MultivariateNormal, kl_divergence
from torch.utils.flop_counter import FlopCounterMode

from iai_prob.inference import IterativeAmortizedGuide, RefinementError, fit
from iai_prob.inference.objectives import kl_to_exact
from iai_prob.inference.posteriors import gaussian_kl as natural_gaussian_kl
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


def _accuracy_cell(guide, settings: Settings, num_points: int):
    """Final KLs ``(T,)``, number of steps and seconds per task for one size."""
    if num_points != settings.large_n:
        kls, spent = held_out_kl_per_step(guide, settings.accuracy_tasks, num_points)
        return kls[-1], kls.shape[0] - 1, spent / kls.shape[1]
    finals, spent, chunk = [], 0.0, 0
    while chunk == 0 or spent < settings.large_seconds:
        kls, taken = held_out_kl_per_step(guide, settings.large_chunk, num_points, chunk)
        finals.append(kls[-1])
        spent, chunk = spent + taken, chunk + 1
    return torch.cat(finals), kls.shape[0] - 1, spent / (chunk * settings.large_chunk)


def _oneshot_kl(oneshot, num_points: int, num_tasks: int, chunk: int) -> torch.Tensor:
    """One-shot KLs on the same held-out tasks as the iterative guide (chunks of ``chunk``)."""
    salts = range(num_tasks // chunk) if num_tasks > chunk else [0]
    size = min(chunk, num_tasks)
    return torch.cat(
        [kl_per_step(oneshot, *held_out(oneshot.family, size, num_points, s))[-1] for s in salts]
    )


def accuracy_table(guide, settings: Settings, baseline: TrainedHere) -> Table:
    """Section 1: median KL to the exact posterior vs N, iterative and one-shot."""
    oneshot = baseline.guide
    table = Table(
        "1. Accuracy vs N: median KL(q ‖ exact posterior), nats",
        [
            "N",
            "tasks",
            "steps K",
            "s / task",
            "iterative (pretrained)",
            "target",
            "verdict",
            "one-shot (num_steps=0)",
        ],
    )
    for num_points in (*settings.accuracy_sizes, settings.large_n):
        try:
            kls, steps, per_task = _accuracy_cell(guide, settings, num_points)
        except RefinementError as error:
            table.add(num_points, "-", "-", "-", f"RefinementError: {error}", "-", "MISS", "-")
            continue
        large = num_points == settings.large_n
        target = settings.accuracy_targets[int(large)]
        chunk = settings.large_chunk if large else settings.accuracy_tasks
        oneshot_kls = _oneshot_kl(oneshot, num_points, len(kls), chunk)
        table.add(
            num_points,
            len(kls),
            steps,
            duration(per_task),
            nats(median(kls)),
            f"≤ {target}",
            verdict(median(kls) <= target),
            nats(median(oneshot_kls)),
        )
    card = guide.card.get("budget", {})
    table.notes += [
        f"iterative: the pretrained guide, trained {card.get('steps')} steps x "
        f"{card.get('tasks_per_step')} tasks, N in {card.get('num_points')}, objective "
        f"{card.get('objective')}, in {card.get('seconds')} s ({card.get('machine')}); one pass "
        "in mini-batches of 64 (N/64 steps) from the set-encoder state of 256 context points",
        f"N = {settings.large_n}: chunks of {settings.large_chunk} tasks until "
        f"{settings.large_seconds:.0f} s were spent; same tasks for both guides",
        f"one-shot: same architecture and posterior family, num_steps=0, trained here with "
        f"fit({', '.join(f'{k}={v}' for k, v in baseline.options.items())}, seed=0) in "
        f"{baseline.seconds:.0f} s; context_size={oneshot.config['context_size']} so that the "
        "encoder sees every point at every N of this table",
        f"held-out tasks: seeds from {HELD_OUT_SEED} + 1000 N (training seeds are < 10^6)",
    ]
    return table


# ---------------------------------------------------------- 2. KL per refinement step
def _reported_steps(num_steps: int) -> list[int]:
    """``0, 1, 2, 4, 8, …, K``."""
    steps = [0] + [2**i for i in range(int(math.log2(max(num_steps, 1))) + 1)]
    return sorted({k for k in steps if k <= num_steps} | {num_steps})


def largest_increase(curve: torch.Tensor) -> tuple[float, int]:
    """The largest ``curve[k] − curve[k−1]`` and its step ``k`` (``(0.0, 0)`` if none)."""
    increases = curve[1:] - curve[:-1]
    k = int(increases.argmax())
    return max(float(increases[k]), 0.0), (k + 1 if increases[k] > 0 else 0)


def _increase_cell(curve: torch.Tensor, increase: float, step: int) -> str:
    if step == 0:
        return "none"
    return f"{increase:.3g} at step {step} ({increase / float(curve[step - 1]):.1%} of KL_(k-1))"


@torch.no_grad()
def streaming_average_kl_per_step(guide, x, y) -> torch.Tensor:
    """``KL(q_k ‖ exact)`` ``(K + 1, T)`` of the exact streaming average over the guide's
    mini-batches: ``q_k``'s natural parameters are the mean of the first ``k`` batch
    targets (``ρ_k = 1/k``), each the exact posterior given its batch with the likelihood
    scaled by ``N/|B|``,

        Λ̂_B = Λ_0 + (N/|B|) X_Bᵀ X_B / σ²,   η̂_B = (N/|B|) X_Bᵀ y_B / σ²,

    the best that averaging one pass of mini-batch targets can do (its ``q_K`` is exact);
    ``q_0`` is the prior.
    """
    family = guide.family
    x, y = x.double(), y.double()
    num_tasks, num_points, dim = x.shape
    exact = family.exact_posterior(x, y)
    exact_loc, exact_precision = exact.loc, exact.precision_matrix
    prior_precision = torch.eye(dim, dtype=x.dtype) / family.prior_scale**2
    linear = torch.zeros(num_tasks, dim, dtype=x.dtype)
    precision = prior_precision.expand(num_tasks, dim, dim)
    kls = [natural_gaussian_kl(linear, precision, exact_loc, exact_precision)]
    for k, index in enumerate(guide.schedule(num_points), start=1):
        scale = num_points / len(index) / family.noise_scale**2
        x_b, y_b = x[:, index], y[:, index]
        target_precision = prior_precision + scale * x_b.mT @ x_b
        target_linear = scale * (x_b.mT @ y_b.unsqueeze(-1)).squeeze(-1)
        linear = linear + (target_linear - linear) / k
        precision = precision + (target_precision - precision) / k
        loc = torch.linalg.solve(precision, linear)
        kls.append(natural_gaussian_kl(loc, precision, exact_loc, exact_precision).clamp_min(0))
    return torch.stack(kls)


def steps_tables(guide, settings: Settings) -> list[Table]:
    """Section 2: median KL after each step of one pass, and the monotonicity check, with
    the exact streaming average (:func:`streaming_average_kl_per_step`) beside the guide."""
    curves, references = {}, {}
    for num_points, num_tasks in settings.step_sizes:
        kls, _ = held_out_kl_per_step(guide, num_tasks, num_points)
        curves[(num_points, kls.shape[1])] = torch.quantile(kls.double(), 0.5, dim=1)
        reference = streaming_average_kl_per_step(
            guide, *held_out(guide.family, num_tasks, num_points)
        )
        references[num_points] = torch.quantile(reference, 0.5, dim=1)
    headers = ["step k"]
    for num_points, num_tasks in curves:
        headers += [f"N = {num_points} ({num_tasks} tasks)", f"N = {num_points}, reference"]
    table = Table("2a. Median KL(q_k ‖ exact) after step k of one pass, nats", headers)
    longest = max(len(curve) for curve in curves.values()) - 1
    columns = [c for n, _ in curves for c in (curves[(n, _)], references[n])]
    for k in _reported_steps(longest):
        table.add(k, *(nats(c[k]) if k < len(c) else "-" for c in columns))
    table.notes.append(
        "mini-batches of 64; K = N/64; step 0 is the set-encoder state (the prior for the "
        "reference, the exact streaming average of 2b)"
    )
    check = Table(
        "2b. Median KL non-increasing in k",
        [
            "N",
            "K",
            "refinement",
            "steps where the median rose",
            "largest increase of the median KL (nats)",
            "KL at K",
            "verdict",
        ],
    )
    for (num_points, _), curve in curves.items():
        rows = {"guide": curve, "exact streaming average (reference)": references[num_points]}
        for name, median_curve in rows.items():
            increase, at = largest_increase(median_curve)
            check.add(
                num_points,
                len(median_curve) - 1,
                name,
                int((median_curve[1:] > median_curve[:-1]).sum()),
                _increase_cell(median_curve, increase, at),
                nats(median_curve[-1]),
                verdict(increase == 0.0) if name == "guide" else "-",
            )
    check.notes.append("checked over every step k, not only the printed ones")
    check.notes.append(
        "reference: the same tasks and mini-batches, with q_k the exact average of the first k "
        "batch targets (rho_k = 1/k; each target the exact posterior given its batch with the "
        "likelihood scaled by N/|B|); its q_K is exact, so the rises it shows come from which "
        "64 points a step sees, not from a learned update"
    )
    return [table, check]


# ---------------------------------------------------------------------------- 3. speed
@dataclass
class Race:
    """One optimizer run until it reaches a target KL (or its step cap)."""

    reached: bool
    steps: int
    seconds: float
    kl: float
    learning_rate: float

    def rank(self) -> tuple:
        """Larger is better: reached first, then faster; else a lower final KL."""
        return (self.reached, -self.seconds if self.reached else -self.kl)

    def cell(self) -> str:
        mark = "" if self.reached else ">"
        return f"{mark}{duration(self.seconds)} ({self.steps} steps, lr {self.learning_rate})"


def race(runner, target: float, max_steps: int, check_every: int, lr: float) -> Race:
    """Advance ``runner`` ``check_every`` steps at a time until its KL ≤ ``target``.

    Only ``runner.advance`` (the optimizer steps) is timed, not the KL checks.
    """
    spent, steps, kl = 0.0, 0, math.inf
    while steps < max_steps:
        spent += timed(runner.advance, check_every)[1]
        steps += check_every
        kl = runner.kl()
        if kl <= target:
            return Race(True, steps, spent, kl, lr)
    return Race(False, steps, spent, kl, lr)


def fastest_race(make_runner, target: float, settings: Settings, max_steps: int) -> Race:
    """The best learning rate of the grid: the fastest to reach ``target`` or, if none does,
    the lowest KL at the cap (later rates are capped at the best step count so far)."""
    best, cap = None, max_steps
    for lr in sorted(settings.svi_learning_rates, reverse=True):
        runner, setup = timed(make_runner, lr)
        result = race(runner, target, cap, settings.svi_check_every, lr)
        result.seconds += setup
        if best is None or result.rank() > best.rank():
            best = result
        if result.reached:
            cap = min(cap, result.steps)
    return best


class PyroSVI:
    """Pyro ``AutoMultivariateNormal`` + Adam on one dataset."""

    def __init__(self, family: LinearRegression, x, y, exact, lr: float):
        import pyro
        from pyro.infer import SVI, Trace_ELBO
        from pyro.infer.autoguide import AutoMultivariateNormal

        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        self.guide = AutoMultivariateNormal(family.model)
        self.svi = SVI(family.model, self.guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
        self.x, self.y, self.exact = x, y, exact

    def advance(self, steps: int) -> None:
        for _ in range(steps):
            self.svi.step(self.x, self.y)

    def kl(self) -> float:
        with torch.no_grad():
            return gaussian_kl(self.guide.get_posterior(), self.exact)


def numpyro_model(x, y=None, *, noise_scale: float, prior_scale: float):
    """NumPyro twin of ``LinearRegression.model``: ``w ~ N(0, s₀² I)``, ``y ~ N(xw, σ²)``."""
    import numpyro
    import numpyro.distributions as nd

    w = numpyro.sample("w", nd.Normal(0.0, prior_scale).expand([x.shape[-1]]).to_event(1))
    with numpyro.plate("data", x.shape[0]):
        return numpyro.sample("y", nd.Normal(x @ w, noise_scale), obs=y)


def _jax_to_torch(array) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.asarray(array, dtype=np.float64))


def family_numpyro_model(family: LinearRegression):
    """:func:`numpyro_model` with the family's noise and prior scales."""
    return functools.partial(
        numpyro_model, noise_scale=family.noise_scale, prior_scale=family.prior_scale
    )


@functools.cache
def compiled_numpyro_svi(family: LinearRegression, lr: float, chunk: int):
    """``(svi, run, moments)``, jitted: ``run(state, x, y)`` makes ``chunk`` SVI updates and
    ``moments(state)`` gives the guide's ``(loc, scale_tril)`` (unjitted, ``get_params`` and
    ``get_posterior`` take about 90 ms, far more than the updates)."""
    import jax
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO, init_to_median
    from numpyro.infer.autoguide import AutoMultivariateNormal

    model = family_numpyro_model(family)
    guide = AutoMultivariateNormal(model, init_loc_fn=init_to_median)
    svi = SVI(model, guide, numpyro.optim.Adam(lr), Trace_ELBO())

    def run(state, x, y):
        return jax.lax.fori_loop(0, chunk, lambda _, s: svi.update(s, x, y)[0], state)

    def moments(state):
        q = guide.get_posterior(svi.get_params(state))
        return q.loc, q.scale_tril

    return svi, jax.jit(run), jax.jit(moments)


class NumPyroSVI:
    """NumPyro ``AutoMultivariateNormal`` + Adam; a jitted chunk of steps per ``advance``."""

    def __init__(self, family: LinearRegression, x, y, exact, lr: float, chunk: int):
        import jax

        svi, self.run, self.moments = compiled_numpyro_svi(family, lr, chunk)
        self.x, self.y, self.exact = x, y, exact
        self.state = svi.init(jax.random.PRNGKey(0), x, y)

    def advance(self, steps: int) -> None:
        """One jitted chunk (``steps`` is the chunk size fixed at compile time)."""
        import jax

        self.state = jax.block_until_ready(self.run(self.state, self.x, self.y))

    def kl(self) -> float:
        loc, scale_tril = self.moments(self.state)
        q = MultivariateNormal(_jax_to_torch(loc), scale_tril=_jax_to_torch(scale_tril))
        return gaussian_kl(q, self.exact)


@functools.cache
def nuts_reference(family: LinearRegression, num_warmup: int, num_samples: int):
    """Single-chain NUTS for the NumPyro twin of ``family``, jitted once (``common``)."""
    return NutsReference(family_numpyro_model(family), num_warmup, num_samples)


def run_nuts(family: LinearRegression, x, y, exact, settings: Settings, seed: int):
    """NUTS on one dataset: ``(KL of the draws' Gaussian fit to exact, seconds)``; the first
    call compiles (``NutsReference.compile_seconds``, not in the seconds returned)."""
    reference = nuts_reference(family, settings.nuts_warmup, settings.nuts_samples)
    draws, spent, _ = reference.run(seed, x.numpy(), y.numpy())
    draws = torch.tensor(draws["w"], dtype=torch.float64)
    fitted = MultivariateNormal(draws.mean(0), covariance_matrix=torch.cov(draws.T))
    return gaussian_kl(fitted, exact), spent


@dataclass
class SpeedRow:
    """Per-dataset results of section 3."""

    guide_kl: float
    guide_seconds: float
    pyro: Race
    numpyro: Race
    nuts_kl: float
    nuts_seconds: float


def _to_jax(tensor: torch.Tensor):
    import jax.numpy as jnp

    return jnp.asarray(tensor.numpy())


def _speed_row(guide, x, y, settings: Settings, index: int) -> SpeedRow:
    """Every method on one dataset ``(x, y)``."""
    family = guide.family
    exact = family.exact_posterior(x, y)
    target = gaussian_kl(guide.posterior(x, y), exact)
    guide_seconds = best_time(settings.repeats, guide.posterior, x, y)
    pyro_runner = functools.partial(PyroSVI, family, x, y, exact)
    pyro_race = fastest_race(pyro_runner, target, settings, settings.svi_max_steps)
    x_jax, y_jax = _to_jax(x), _to_jax(y)
    numpyro_runner = functools.partial(
        NumPyroSVI, family, x_jax, y_jax, exact, chunk=settings.svi_check_every
    )
    numpyro_race = fastest_race(numpyro_runner, target, settings, settings.numpyro_max_steps)
    nuts_kl, nuts_seconds = run_nuts(family, x, y, exact, settings, seed=index + 1)
    return SpeedRow(target, guide_seconds, pyro_race, numpyro_race, nuts_kl, nuts_seconds)


def _jax_compile_seconds(family, x, y, settings: Settings) -> float:
    """Warm up (compile, then one run of) NUTS and the jitted SVI chunks; their time."""
    x_jax, y_jax, exact = _to_jax(x), _to_jax(y), family.exact_posterior(x, y)
    spent = timed(run_nuts, family, x, y, exact, settings, 0)[1]
    for lr in settings.svi_learning_rates:
        runner, setup = timed(NumPyroSVI, family, x_jax, y_jax, exact, lr, settings.svi_check_every)
        spent += setup + timed(runner.advance, settings.svi_check_every)[1]
        spent += timed(runner.kl)[1]
    return spent


def _speed_rows(guide, settings: Settings) -> tuple[list[SpeedRow], float, float]:
    """Every method on each dataset; also the batched guide time per dataset and the JAX
    compile time (paid before the rows, so excluded from them)."""
    x, y = held_out(guide.family, settings.speed_datasets, settings.speed_n, salt=7)
    batched = best_time(settings.repeats, guide.posterior, x, y) / len(x)
    compile_seconds = _jax_compile_seconds(guide.family, x[0], y[0], settings)
    rows = [_speed_row(guide, x[i], y[i], settings, i) for i in range(len(x))]
    return rows, batched, compile_seconds


def speed_tables(guide, settings: Settings) -> list[Table]:
    """Section 3: time to posterior per dataset, guide vs Pyro SVI, NumPyro SVI and NUTS."""
    rows, batched, compile_seconds = _speed_rows(guide, settings)
    single = median(r.guide_seconds for r in rows)
    summary = Table(
        f"3a. Time to posterior per dataset, N = {settings.speed_n}, "
        f"{len(rows)} datasets (medians)",
        [
            "method",
            "time / dataset",
            "median KL",
            "reached guide's KL",
            "guide speed-up (one at a time / batched)",
            "target",
            "verdict",
        ],
    )
    guide_kl = nats(median(r.guide_kl for r in rows))
    summary.add(
        f"iterative guide, batched over the {len(rows)} datasets",
        duration(batched),
        guide_kl,
        *["-"] * 4,
    )
    summary.add("iterative guide, one dataset at a time", duration(single), guide_kl, *["-"] * 4)
    baselines = [
        ("Pyro SVI (AutoMultivariateNormal, Adam)", [r.pyro for r in rows], True),
        ("NumPyro SVI (AutoMultivariateNormal, Adam, jit)", [r.numpyro for r in rows], False),
    ]
    for name, races, has_target in baselines:
        spent = median(r.seconds for r in races)
        summary.add(
            name,
            duration(spent),
            nats(median(r.kl for r in races)),
            f"{sum(r.reached for r in races)}/{len(races)}",
            f"{spent / single:.3g}x / {spent / batched:.3g}x",
            f"≥ {settings.speed_target:.0f}x" if has_target else "-",
            verdict(spent / single >= settings.speed_target) if has_target else "-",
        )
    nuts = median(r.nuts_seconds for r in rows)
    summary.add(
        f"NumPyro NUTS ({settings.nuts_warmup} warmup + {settings.nuts_samples} samples, "
        "1 chain, jitted once)",
        duration(nuts),
        nats(median(r.nuts_kl for r in rows)),
        "-",
        f"{nuts / single:.3g}x / {nuts / batched:.3g}x",
        "-",
        "-",
    )
    summary.notes += [
        "SVI stops at the first check (every "
        f"{settings.svi_check_every} steps) where KL(q ‖ exact) ≤ the guide's KL on that "
        f"dataset, capped at {settings.svi_max_steps:,} steps for Pyro and "
        f"{settings.numpyro_max_steps:,} for NumPyro (cheap when jitted); '>' = never reached: "
        "the time of the cap, a lower bound, and the KL at the cap; KL checks are not timed",
        "learning rate: per dataset the fastest of "
        f"{list(settings.svi_learning_rates)} to reach the guide's KL, or the one with the "
        "lowest KL at the cap (the search itself is not counted); both SVIs "
        "start from init_to_median with init_scale 0.1, 1 ELBO particle",
        "JAX warm-up (compiling NUTS and the SVI chunks, then one run of each; excluded "
        f"above, paid once per process): {duration(compile_seconds)}",
        "NUTS KL: the Gaussian fitted to the draws vs the exact posterior (sampling noise "
        "included)",
        "verdict: Pyro SVI time / guide time one dataset at a time; KL is equal or better "
        "by the stopping rule, or the guide's is lower where SVI never reached it",
    ]
    detail = Table(
        "3b. Per dataset",
        [
            "dataset",
            "guide KL",
            "guide time",
            "Pyro SVI",
            "Pyro KL",
            "NumPyro SVI",
            "NumPyro KL",
            "NUTS time",
            "NUTS KL",
        ],
    )
    for i, r in enumerate(rows):
        detail.add(
            i,
            nats(r.guide_kl),
            duration(r.guide_seconds),
            r.pyro.cell(),
            nats(r.pyro.kl),
            r.numpyro.cell(),
            nats(r.numpyro.kl),
            duration(r.nuts_seconds),
            nats(r.nuts_kl),
        )
    return [summary, detail]


# ----------------------------------------------------------------------- 4. throughput
def throughput_tables(guide, settings: Settings, oneshot: IterativeAmortizedGuide) -> list[Table]:
    """Section 4: datasets per second of ``guide.posterior`` on a batch of tasks, with the
    median KL each guide reaches on them (4a); the ceiling that the set encoder's arithmetic
    puts on the pretrained guide on this machine (4b)."""
    lean = train_here(guide, settings, **LEAN_GUIDE)
    table = Table(
        f"4. Throughput at N = {settings.throughput_n}: datasets per second",
        [
            "guide",
            "tasks per call",
            "precompile (once per shape)",
            "time per call",
            "datasets / s",
            "median KL",
            "target",
            "verdict",
        ],
    )
    guides = {
        "iterative (pretrained)": guide,
        "one-shot (num_steps=0)": oneshot,
        "lean iterative (trained here)": lean.guide,
    }
    for num_tasks in settings.throughput_batches:
        x, y = held_out(guide.family, num_tasks, settings.throughput_n, salt=11)
        for name, candidate in guides.items():
            compiling = timed(candidate.precompile, x, y)[1]
            spent = best_time(settings.repeats, candidate.posterior, x, y)
            rate = num_tasks / spent
            pretrained = candidate is guide
            table.add(
                name,
                num_tasks,
                duration(compiling),
                duration(spent),
                f"{rate:,.0f}",
                nats(median(kl_per_step(candidate, x, y)[-1])),
                f"≥ {settings.throughput_target:,.0f}" if pretrained else "-",
                verdict(rate >= settings.throughput_target) if pretrained else "-",
            )
    large = kl_per_step(lean.guide, *held_out(guide.family, settings.large_chunk, settings.large_n))
    table.notes += [
        f"guide.posterior(x, y), x of shape (T, {settings.throughput_n}, 8); median of "
        f"{settings.repeats} calls after guide.precompile(x, y) (its TorchInductor kernels "
        "for this shape, as a user does before many datasets of one shape; excluded as "
        f"NumPyro's jit is) and a warm-up, torch threads: {torch.get_num_threads()}; "
        "median KL(q ‖ exact) over the same tasks",
        f"lean: {LEAN_GUIDE}, trained here with the pretrained card's budget in "
        f"{lean.seconds:.0f} s; its median KL at N = {settings.large_n:,} "
        f"({settings.large_chunk} tasks, one pass) is {nats(median(large[-1]))} nats, "
        "so it is not the shipped guide",
    ]
    return [table, throughput_bound_table(guide, settings)]


def encoder_flops_per_dataset(guide: IterativeAmortizedGuide, num_points: int) -> float:
    """Matrix-multiply FLOPs of the guide's set encoder for one dataset of ``num_points``
    at the default answer, which encodes the context once (the convergence phase starts
    from ``λ_0``; no learned mini-batch steps): torch's ``FlopCounterMode``, elementwise
    work such as softmax and norms left out."""
    size = min(num_points, guide.config["context_size"])
    features = torch.zeros(1, size, guide.refiner.feature_dim)
    with FlopCounterMode(display=False) as counter:
        guide.refiner.encoder(features, num_points)
    return float(counter.get_total_flops())


def matmul_peak_flops(size: int = 2048, repeats: int = 10) -> float:
    """Float32 FLOP/s of a ``size``² matrix product on this machine (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(timed(torch.matmul, a, b)[1] for _ in range(repeats))
    return 2 * size**3 / best


def throughput_bound_table(guide, settings: Settings) -> Table:
    """Section 4b: where a posterior's time goes on the largest batch (the encoder's
    ``λ_0`` against the rest: the convergence phase and ``k̂``), and the rate the encoder
    alone allows at this machine's matmul peak."""
    num_tasks = max(settings.throughput_batches)
    x, y = held_out(guide.family, num_tasks, settings.throughput_n, salt=11)
    data = guide.prepare(x, y).data
    with torch.no_grad():
        encoder = best_time(settings.repeats, guide.initial_state, data)
        whole = best_time(settings.repeats, guide.posterior, x, y)
    flops = encoder_flops_per_dataset(guide, settings.throughput_n)
    peak = matmul_peak_flops()
    table = Table(
        f"4b. What bounds the throughput at N = {settings.throughput_n} ({num_tasks} tasks "
        "per call)",
        ["quantity", "value"],
    )
    table.add("measured: the whole posterior", f"{num_tasks / whole:,.0f} datasets / s")
    table.add(
        "measured: the set encoder's λ_0 alone (guide.initial_state)",
        f"{num_tasks / encoder:,.0f} datasets / s ({encoder / whole:.0%} of the time)",
    )
    rest = max(whole - encoder, 1e-9)
    table.add(
        "measured: the rest (convergence phase and k̂, 1,000 draws)",
        f"{num_tasks / rest:,.0f} datasets / s",
    )
    table.add("set-encoder matmul work per dataset", f"{flops / 1e6:.2f} MFLOP")
    table.add(
        f"float32 matmul peak of this machine (2048² product, {torch.get_num_threads()} threads)",
        f"{peak / 1e9:.1f} GFLOP/s",
    )
    table.add(
        "datasets / s if the encoder ran at that peak and nothing else ran",
        f"{peak / flops:,.0f}",
    )
    table.notes.append(
        f"the guide's encoder is a {guide.config['encoder']} that sees the "
        f"{min(settings.throughput_n, guide.config['context_size'])}-point context once (the "
        "default answer runs no learned mini-batch steps); its matrix products are small "
        "(hidden width 32, 8 inducing points), far from the 2048² product's peak"
    )
    return table


# --------------------------------------------------------------------------- 5. memory
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
    command = [sys.executable, __file__, "--memory-worker", str(num_points)]
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


# ------------------------------------------------------------------------ 6. stability
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


# ------------------------------------------------------------------------------- main
def header(args, guide) -> str:
    """What ran, where, with which guide."""
    card = guide.card.get("budget", {})
    return "\n".join(
        [
            "## iai_prob benchmark: linear_regression",
            "",
            f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
            f"- guide: {args.guide or 'pretrained ' + PRETRAINED} ({guide.family!r}), trained "
            f"{card.get('steps')} steps, N in {card.get('num_points')}, batch_size "
            f"{guide.config['batch_size']}",
            f"- machine: {platform.machine()}, {os.cpu_count()} CPUs visible, "
            f"torch threads: {torch.get_num_threads()}, torch {torch.__version__}, "
            f"load average at start {os.getloadavg()[0]:.1f}",
            f"- mode: {'quick (smoke test sizes)' if args.quick else 'full'}",
            "",
        ]
    )


def run_sections(args, guide, settings: Settings, report: Report) -> None:
    """Run the selected sections in order, adding each table to ``report``."""
    baseline = train_oneshot(guide, settings) if args.sections & {1, 4} else None
    sections = {
        1: lambda: [accuracy_table(guide, settings, baseline)],
        2: lambda: steps_tables(guide, settings),
        3: lambda: speed_tables(guide, settings),
        4: lambda: throughput_tables(guide, settings, baseline.guide),
        5: lambda: [memory_table(args, settings)],
        6: lambda: [stability_table(guide, settings)],
    }
    for number in sorted(args.sections):
        tables, spent = timed(sections[number])
        for table in tables:
            report.add(table.markdown())
        report.add(f"_section {number}: {duration(spent)}_\n")


def parse_args(argv=None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sections", default="1,2,3,4,5,6", help="comma-separated subset")
    parser.add_argument("--tasks", type=int, default=None, help="tasks drawn in section 6")
    parser.add_argument("--stream-batch", type=int, default=None, help="section 5 batch size")
    parser.add_argument("--memory-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sections = {int(s) for s in args.sections.split(",") if s.strip()}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    limit_threads(args.threads)
    settings = QUICK if args.quick else FULL
    overrides = {"stability_tasks": args.tasks, "stream_batch": args.stream_batch}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v})
    if args.memory_worker is not None:
        print(json.dumps(memory_worker(args.memory_worker, settings.stream_batch, args.guide)))
        return 0
    started = time.perf_counter()
    guide = load_guide(PRETRAINED, args.guide)
    report = Report()
    report.add(header(args, guide))
    try:
        run_sections(args, guide, settings, report)
    finally:
        report.add(f"_total wall time {time.perf_counter() - started:.0f} s_")
        report.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
