"""Benchmark the pretrained ``gaussian_mixture`` guide against NumPyro NUTS.

    python benchmarks/gaussian_mixture.py                 # full run (about 5 minutes)
    python benchmarks/gaussian_mixture.py --quick         # smoke test (< 60 s)
    python benchmarks/gaussian_mixture.py --out results.md

Held-out tasks of ``GaussianMixture(dim=2, num_components=3)`` (``π ~ Dir(2·1)``,
``μ_k ~ N(0, 3² I)``, ``y_n ~ Σ_k π_k N(μ_k, 0.5² I)``) at N = 64 and 1,024 points. The
reference is single-chain NUTS (500 warmup + 1,000 draws) on the same model written in
NumPyro with the assignments marginalized (``MixtureSameFamily``). Per task, fresh
held-out points ``y*`` are drawn from the task's true parameters and both posteriors are
scored by the log predictive density per point ``log (1/S) Σ_s p(y* | θ_s)``, which is
invariant to relabelling the components, so label switching in NUTS does not matter.

Targets: median over tasks of ``lpd_guide − lpd_NUTS`` within 0.05 nats per point; PSIS k̂
of the guide is reported with the criterion used for the other benchmarks (k̂ < 0.7 on
≥ 90 % of tasks). The guide is judged on datasets passed one at a time, as a user calls
it; the predictive of the same guide run on all tasks as one batch is shown alongside,
because for models with enumerated sites a task's batched posterior depends on the
other tasks in the batch.

k̂ needs ``log p(z, D)`` for 1,000 draws per task. ``importance_log_weights`` evaluates an
enumerated model one draw at a time (milliseconds each), so the log joint is computed
here in closed form, vectorized over draws, and checked against
``importance_log_weights`` on a few draws first.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

# run as a script: Python puts this folder first on sys.path
from common import (
    KHAT_HEADERS,
    Comparison,
    NutsReference,
    Report,
    base_parser,
    compare,
    guide_draws,
    khat_rows,
    limit_threads,
    load_guide,
    markdown_table,
    posterior,
    psis_khat,
    spread,
    stopwatch,
    task_slice,
    timing_section,
    verdict,
)

PRETRAINED = "gaussian_mixture"
LPD_TOLERANCE = 0.05


@dataclass(frozen=True)
class Settings:
    """Sizes of the run: tasks per dataset size, NUTS length, draws and held-out points."""

    tasks: dict[int, int] = field(default_factory=lambda: {64: 32, 1024: 32})
    num_warmup: int = 500
    num_samples: int = 1000
    num_draws: int = 1000
    test_points: int = 1000
    check_tasks: int = 2
    check_draws: int = 20


FULL = Settings()
QUICK = Settings(
    tasks={128: 3},
    num_warmup=150,
    num_samples=300,
    num_draws=300,
    test_points=200,
    check_draws=5,
)


def numpyro_model(family):
    """The NumPyro twin of ``family.model`` with the assignments summed out, for ``y (N, d)``."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    k, d = family.num_components, family.dim

    def model(y):
        weights = numpyro.sample("weights", dist.Dirichlet(jnp.full(k, family.concentration)))
        locs = numpyro.sample(
            "locs", dist.Normal(0.0, family.prior_scale).expand([k, d]).to_event(2)
        )
        components = dist.Normal(locs, family.noise_scale).to_event(1)
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample(
                "y", dist.MixtureSameFamily(dist.Categorical(probs=weights), components), obs=y
            )

    return model


# ---------------------------------------------------------------------------- densities
def mixture_log_likelihood(family, weights, locs, y) -> torch.Tensor:
    """``log p(y_m | π, μ)`` for parameters ``(S, K)``, ``(S, K, d)`` and points ``(M, d)``.

    Returns ``(S, M)``.
    """
    components = torch.distributions.Normal(locs.unsqueeze(1), family.noise_scale)
    per_component = components.log_prob(y[None, :, None, :]).sum(-1)  # (S, M, K)
    return torch.logsumexp(weights.log().unsqueeze(1) + per_component, dim=-1)


def log_predictive(family, weights, locs, y) -> float:
    """Mean over points of ``log (1/S) Σ_s p(y_m | θ_s)`` for ``S`` posterior draws."""
    log_lik = mixture_log_likelihood(family, weights, locs, y)
    return float((torch.logsumexp(log_lik, 0) - math.log(len(weights))).mean())


def log_joint(family, layout, z, y) -> torch.Tensor:
    """``log p(z, D)`` in the guide's unconstrained space for draws ``z (S, D)`` of one task."""
    values = {site.name: (value, jacobian) for site, value, jacobian in layout.unpack(z)}
    (weights, weights_jacobian), (locs, locs_jacobian) = values["weights"], values["locs"]
    alpha = torch.full((family.num_components,), family.concentration)
    log_prior = torch.distributions.Dirichlet(alpha).log_prob(weights)
    log_prior = log_prior + torch.distributions.Normal(0.0, family.prior_scale).log_prob(locs).sum(
        (-2, -1)
    )
    log_lik = mixture_log_likelihood(family, weights, locs, y).sum(-1)
    return log_prior + log_lik + weights_jacobian + locs_jacobian


@torch.no_grad()
def log_weights(guide, layout, state, y, num_draws: int, seed: int) -> torch.Tensor:
    """``log p(z, D) − log q(z)`` for ``num_draws`` draws per task, ``(num_draws, T)``.

    The draws are those of ``importance_log_weights`` with the same ``seed``.
    """
    z = guide_draws(guide, state, num_draws, seed)
    log_q = posterior(guide, state).log_prob(z)
    columns = [log_joint(guide.family, layout, z[:, t], y[t]) for t in range(z.shape[1])]
    return torch.stack(columns, dim=-1) - log_q


@torch.no_grad()
def check_log_weights(guide, comparison: Comparison, settings: Settings) -> tuple[float, float]:
    """Largest gap (nats) between :func:`log_weights` and ``importance_log_weights``.

    Also returns the library's seconds per draw and task, on ``check_tasks`` tasks.
    """
    from iai_prob.inference.evaluation import importance_log_weights

    index = slice(0, settings.check_tasks)
    x, y = (a[index] for a in comparison.args)
    task = guide.prepare(x, y)
    state = task_slice(comparison.single_state, index)
    with stopwatch() as elapsed:
        library = importance_log_weights(guide, task, state, settings.check_draws, seed=0)
    ours = log_weights(guide, task.layout, state, y, settings.check_draws, seed=0)
    gap = float((library - ours).abs().max())
    return gap, elapsed() / library.numel()


# ---------------------------------------------------------------------------- metrics
def held_out_points(family, theta, num_points: int, seed: int) -> torch.Tensor:
    """Fresh points ``(T, M, d)`` from each task's true weights and means."""
    generator = torch.Generator().manual_seed(seed)
    weights, locs = theta["weights"], theta["locs"]
    assignment = torch.multinomial(weights, num_points, replacement=True, generator=generator)
    centres = locs.gather(1, assignment.unsqueeze(-1).expand(-1, -1, family.dim))
    noise = torch.randn(centres.shape, generator=generator)
    return centres + family.noise_scale * noise


def guide_predictive(guide, layout, state, y_test, num_draws: int, seed: int) -> np.ndarray:
    """Log predictive density per point of the guide's draws, per task ``(T,)``."""
    z = guide_draws(guide, state, num_draws, seed)
    values = {site.name: value for site, value, _ in layout.unpack(z)}
    return np.array(
        [
            log_predictive(guide.family, values["weights"][:, t], values["locs"][:, t], y_test[t])
            for t in range(len(y_test))
        ]
    )


def nuts_predictive(family, draws: dict[str, np.ndarray], y_test) -> np.ndarray:
    """Log predictive density per point of the NUTS draws, per task ``(T,)``."""
    weights = torch.as_tensor(draws["weights"], dtype=torch.float32)
    locs = torch.as_tensor(draws["locs"], dtype=torch.float32)
    return np.array(
        [log_predictive(family, weights[t], locs[t], y_test[t]) for t in range(len(y_test))]
    )


def true_predictive(family, theta: dict[str, torch.Tensor], y_test) -> np.ndarray:
    """Log density per point under the task's true parameters (an oracle), per task ``(T,)``."""
    weights, locs = theta["weights"].unsqueeze(1), theta["locs"].unsqueeze(1)
    return np.array(
        [log_predictive(family, weights[t], locs[t], y_test[t]) for t in range(len(y_test))]
    )


@dataclass
class Metrics:
    """Per-task predictive densities (nats per point) and k̂ at one dataset size."""

    lpd_nuts: np.ndarray
    lpd_true: np.ndarray
    lpd_single: np.ndarray
    lpd_batched: np.ndarray
    khat: np.ndarray


def measure(guide, comparison: Comparison, settings: Settings) -> Metrics:
    """Predictive densities of NUTS and the guide (one at a time, batched) and k̂."""
    family, layout = guide.family, comparison.task.layout
    seed = comparison.num_points
    y_test = held_out_points(family, comparison.theta, settings.test_points, seed=seed)
    y = comparison.args[1]
    single, batched = comparison.single_state, comparison.state
    return Metrics(
        lpd_nuts=nuts_predictive(family, comparison.nuts.draws, y_test),
        lpd_true=true_predictive(family, comparison.theta, y_test),
        lpd_single=guide_predictive(guide, layout, single, y_test, settings.num_draws, seed),
        lpd_batched=guide_predictive(guide, layout, batched, y_test, settings.num_draws, seed),
        khat=psis_khat(log_weights(guide, layout, single, y, settings.num_draws, seed)),
    )


def predictive_rows(results: dict[int, tuple[Comparison, Metrics]]) -> list[list[object]]:
    """Rows of the predictive table, one per dataset size."""
    rows = []
    for n, (comparison, metrics) in results.items():
        gap = metrics.lpd_single - metrics.lpd_nuts
        within = np.abs(gap) <= LPD_TOLERANCE
        rows.append(
            [
                f"{n:,}",
                comparison.num_tasks,
                f"{comparison.nuts.leapfrog_steps:.1f}",
                spread(metrics.lpd_nuts, 3),
                spread(metrics.lpd_true - metrics.lpd_nuts, 3),
                spread(gap, 3),
                f"{within.mean():.0%}",
                spread(metrics.lpd_batched - metrics.lpd_nuts, 3),
                f"abs(median) ≤ {LPD_TOLERANCE}",
                verdict(abs(float(np.median(gap))) <= LPD_TOLERANCE),
            ]
        )
    return rows


PREDICTIVE_HEADERS = (
    "N",
    "tasks",
    "NUTS leapfrog steps/iter",
    "lpd NUTS (nats/point)",
    "lpd true θ − NUTS (oracle)",
    "lpd guide − NUTS (one at a time)",
    "tasks within 0.05",
    "lpd guide − NUTS (batched)",
    "target",
    "result",
)


def run(settings: Settings, guide_path: Path | None):
    """Compare the guide with NUTS at every dataset size; also check the log weights."""
    guide = load_guide(PRETRAINED, guide_path)
    reference = NutsReference(
        numpyro_model(guide.family), settings.num_warmup, settings.num_samples
    )
    results, checks = {}, {}
    for n, num_tasks in settings.tasks.items():
        comparison = compare(
            guide,
            reference,
            n,
            num_tasks,
            single_datasets=num_tasks,
            nuts_args=lambda x, y: (y.numpy(),),
        )
        checks[n] = check_log_weights(guide, comparison, settings)
        results[n] = comparison, measure(guide, comparison, settings)
        print(f"N = {n:,}: done", file=sys.stderr, flush=True)
    return results, checks


def main(argv=None) -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args(argv)
    limit_threads(args.threads)
    settings = QUICK if args.quick else FULL
    with stopwatch() as elapsed:
        results, checks = run(settings, args.guide)
    report = Report()
    report.add(
        f"## Gaussian mixture (d = 2, K = 3): guide vs NUTS{' (quick)' if args.quick else ''}"
        f"\n\nNUTS: one chain, {settings.num_warmup} warmup + {settings.num_samples} draws "
        f"per task; guide: {settings.num_draws} draws per task; {settings.test_points} "
        "held-out points per task. Cells: median [10 %, 90 %] over tasks.\n"
    )
    report.add(markdown_table(PREDICTIVE_HEADERS, predictive_rows(results)) + "\n")
    khats = {n: metrics.khat for n, (_, metrics) in results.items()}
    report.add(
        "### PSIS k̂ of the guide (datasets one at a time)\n\n"
        + markdown_table(KHAT_HEADERS, khat_rows(khats))
    )
    check_notes = "; ".join(
        f"N = {n:,}: max gap {gap:.1e} nats, library {per_draw * 1e3:.1f} ms per draw and task"
        for n, (gap, per_draw) in checks.items()
    )
    report.add(
        f"\nVectorized log joint vs `importance_log_weights` ({settings.check_tasks} tasks × "
        f"{settings.check_draws} draws): {check_notes}."
    )
    report.add(timing_section(results, args.threads, elapsed()))
    report.save(args.out)


if __name__ == "__main__":
    main()
