"""Section 3: time to the posterior per dataset against Pyro SVI, NumPyro SVI and NumPyro
NUTS, each run until it reaches the guide's KL."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from common import (
    NutsReference,
    verdict,
)
from torch.distributions import MultivariateNormal

from iai_prob.models import LinearRegression

from .shared import Settings, Table, best_time, duration, gaussian_kl, held_out, median, nats, timed


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
