"""Hierarchical models (global latents in a group plate) against NUTS and Laplace.

    python benchmarks/hierarchical.py              # 3 seeds
    python benchmarks/hierarchical.py --quick      # 1 seed, fewer draws

Two models a statistician would write with group effects, in raw units, answered by an
*untrained* guide's converged default (no meta-training: the shared layout admits the
group plate, and the convergence phase starts from the best of the encoder's, the
prior's and a Newton point, so the answer is the Gaussian VI optimum wherever the
network starts):

* ``grunfeld_random_intercepts``: statsmodels' ``grunfeld`` (11 firms × 20 years),
  ``invest = a_firm + b · (value, capital) + ε``, ``a_firm ~ N(μ, τ)``,
  ``μ ~ N(0, 100²)``, ``b ~ N(0, 10²)``, ``τ, σ ~ HalfNormal(100)``;
* ``test_scores_5_rows``: 40 schools of 5 students (simulated per seed: scores near 500,
  school sd 30, student sd 80), ``a_school ~ N(μ, τ)``, ``μ ~ N(500, 100²)``,
  ``τ ~ HalfNormal(50)``, ``σ ~ HalfNormal(100)``.

For each seed: NUTS (NumPyro, 500 warmup + 1,000 draws, jitted once) twice with two
seeds, the first the reference and the pair the floor (C2ST of NUTS against NUTS); the
guide's draws and the compiled damped-Newton Laplace's (:mod:`real_models.laplace`)
against the reference (C2ST over all coordinates, constrained), the guide's largest
standardized mean difference and its sd ratios, its PSIS ``k̂`` and whether it
converged. Times per dataset: the guide (median of 5 calls after one warm-up), Laplace
(compiled call), NUTS (one chain, after compiling).
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import numpy as np
import pyro as torch_pyro
import torch
from common import Report, base_parser, limit_threads, markdown_table
from pyroapi import distributions as dist
from pyroapi import pyro
from real_models.laplace import LaplaceBaseline
from real_models.models import numpyro_model

from iai_prob.diagnostics.compare import c2st_accuracy, flatten_draws
from iai_prob.diagnostics.nuts import NutsReference
from iai_prob.inference import IterativeAmortizedGuide
from iai_prob.posterior_status import PosteriorNotice, PosteriorWarning
from iai_prob.refinement_state import RefinementError

SCHOOLS, STUDENTS = 40, 5


def grunfeld_random_intercepts(x, firm, y=None):
    """Gross investment on firm value and capital stock, an intercept per firm (pyro-api:
    the same code runs under Pyro and, through :func:`numpyro_model`, NumPyro)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 100.0))
    tau = pyro.sample("tau", dist.HalfNormal(100.0))
    b = pyro.sample("b", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(100.0))
    with pyro.plate("firms", 11):
        a = pyro.sample("a", dist.Normal(mu, tau))
    with pyro.plate("data", x.shape[-2]):
        mean = a[..., firm] + (x * b[..., None, :]).sum(-1)
        pyro.sample("y", dist.Normal(mean, sigma), obs=y)


def test_scores(school, y=None):
    """Test scores of students, a mean per school."""
    mu = pyro.sample("mu", dist.Normal(500.0, 100.0))
    tau = pyro.sample("tau", dist.HalfNormal(50.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(100.0))
    with pyro.plate("schools", SCHOOLS):
        a = pyro.sample("a", dist.Normal(mu, tau))
    with pyro.plate("data", school.shape[-1]):
        pyro.sample("y", dist.Normal(a[..., school], sigma), obs=y)


def grunfeld_data(seed: int) -> tuple[np.ndarray, ...]:
    """The same 220 rows for every seed (the seeds vary NUTS and the draws)."""
    import statsmodels.api as sm

    frame = sm.datasets.grunfeld.load_pandas().data
    firm = frame["firm"].astype("category").cat.codes.to_numpy(np.int64)
    return (
        frame[["value", "capital"]].to_numpy(np.float64),
        firm,
        frame["invest"].to_numpy(np.float64),
    )


def test_scores_data(seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(SCHOOLS), STUDENTS)
    effects = 500.0 + 30.0 * rng.standard_normal(SCHOOLS)
    return school, effects[school] + 80.0 * rng.standard_normal(len(school))


MODELS = {
    "grunfeld_random_intercepts": (grunfeld_random_intercepts, grunfeld_data),
    "test_scores_5_rows": (test_scores, test_scores_data),
}
HEADERS = (
    "model",
    "rows × groups",
    "params",
    "guide C2ST",
    "NUTS floor C2ST",
    "Laplace C2ST",
    "max mean diff / sd",
    "sd ratio",
    "k̂",
    "converged",
    "guide",
    "Laplace",
    "NUTS",
)


def _torch(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(array, dtype=torch.float32 if array.dtype.kind == "f" else None)


def run_seed(name: str, seed: int, num_draws: int) -> dict:
    """One dataset of model ``name`` at ``seed``: the guide, NUTS twice and Laplace."""
    model, load = MODELS[name]
    twin = numpyro_model(model)
    data = load(seed)
    torch.manual_seed(seed)  # the untrained guide's initial weights
    guide = IterativeAmortizedGuide(model, seed=seed)
    args = tuple(_torch(array) for array in data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PosteriorWarning)
        warnings.simplefilter("always", PosteriorNotice)
        try:
            guide.posterior(*args)  # warm-up: traces the model
            times = []
            for _ in range(5):
                started = time.perf_counter()
                posterior = guide.posterior(*args)
                times.append(time.perf_counter() - started)
        except (ValueError, RefinementError) as error:  # reported in the table, not hidden
            return {"error": f"{type(error).__name__}: {str(error)[:60]}"}
    status = guide.last_status
    torch_pyro.set_rng_seed(seed)
    latent = posterior.sample((num_draws,))
    layout = guide.prepare(*args).layout
    sites = layout.site_names
    values = {site.name: value.numpy() for site, value, _ in layout.unpack(latent)}
    reference = NutsReference(twin, 500, num_draws)
    chains = [reference.run(seed * 2 + k, *data) for k in range(2)]
    (first, first_seconds, _), (second, _, _) = chains
    laplace = LaplaceBaseline(twin)
    laplace.run(*data)  # compiles
    solved = laplace.run(*data)
    laplace_draws = laplace.draws(solved, num_draws, seed, *data)
    guide_flat, _ = flatten_draws(values, sites)
    nuts_flat, _ = flatten_draws(first, sites)
    standardized = (guide_flat.mean(0) - nuts_flat.mean(0)) / nuts_flat.std(0)
    ratio = guide_flat.std(0) / nuts_flat.std(0)
    return {
        "rows": len(data[-1]),
        "groups": int(data[-2].max()) + 1,
        "params": guide_flat.shape[1],
        "guide": c2st_accuracy(guide_flat, nuts_flat, seed=seed),
        "floor": c2st_accuracy(flatten_draws(second, sites)[0], nuts_flat, seed=seed),
        "laplace": c2st_accuracy(flatten_draws(laplace_draws, sites)[0], nuts_flat, seed=seed),
        "mean": float(np.abs(standardized).max()),
        "ratio": (float(ratio.min()), float(ratio.max())),
        "khat": float(status.khat),
        "converged": bool(status.converged),
        "warned": sorted({type(w.message).__name__ for w in caught}),
        "guide_seconds": statistics.median(times),
        "laplace_seconds": solved.seconds,
        "nuts_seconds": first_seconds,
    }


def _mean_range(values) -> str:
    return f"{np.mean(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def table_row(name: str, runs: list[dict]) -> list[str]:
    failed = [run["error"] for run in runs if "error" in run]
    runs = [run for run in runs if "error" not in run]
    if not runs:
        return [name, *["—"] * (len(HEADERS) - 2), f"{len(failed)} failed: {failed[0]}"]
    first = runs[0]
    warned = sorted({kind for run in runs for kind in run["warned"]})
    return [
        name,
        f"{first['rows']} × {first['groups']}",
        str(first["params"]),
        _mean_range([run["guide"] for run in runs]),
        _mean_range([run["floor"] for run in runs]),
        _mean_range([run["laplace"] for run in runs]),
        f"{max(run['mean'] for run in runs):.2f}",
        f"{min(run['ratio'][0] for run in runs):.2f}–{max(run['ratio'][1] for run in runs):.2f}",
        f"{max(run['khat'] for run in runs):.2f}" + (f" ({', '.join(warned)})" if warned else ""),
        f"{sum(run['converged'] for run in runs)}/{len(runs) + len(failed)}"
        + (f" ({len(failed)} failed: {failed[0]})" if failed else ""),
        f"{1000 * statistics.median(run['guide_seconds'] for run in runs):.1f} ms",
        f"{1000 * statistics.median(run['laplace_seconds'] for run in runs):.2f} ms",
        f"{statistics.median(run['nuts_seconds'] for run in runs):.2f} s",
    ]


def main(argv=None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model")
    options = parser.parse_args(argv)
    limit_threads(options.threads)
    seeds, num_draws = (1, 500) if options.quick else (options.seeds, 1000)
    rows = [
        table_row(name, [run_seed(name, seed, num_draws) for seed in range(seeds)])
        for name in MODELS
    ]
    report = Report()
    report.add(
        f"Hierarchical models, untrained guide's converged default against NUTS "
        f"({seeds} seed(s), {num_draws} draws each; C2ST mean [min, max] over seeds, 0.5 = "
        f"indistinguishable; times per dataset, {options.threads} thread(s))\n"
    )
    report.add(markdown_table(HEADERS, rows) + "\n")
    report.save(options.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
