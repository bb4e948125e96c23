"""Meta-train a guide for Bayesian linear regression and compare it with per-dataset SVI.

    python examples/linear_regression.py                 # about 3 minutes on 2 CPU cores
    python examples/linear_regression.py --steps 20 --tasks 4 --svi-steps 50   # smoke test

Prints, for held-out datasets, the median KL(q ‖ exact posterior) after each refinement
step of one pass, the time per dataset, and the same for Pyro SVI with
``AutoMultivariateNormal`` run on each dataset separately.
"""

from __future__ import annotations

import argparse
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal

from iai_prob.inference import IterativeAmortizedGuide, fit
from iai_prob.inference.objectives import kl_to_exact
from iai_prob.models import LinearRegression


def svi_baseline(family, x, y, steps: int, learning_rate: float) -> tuple[float, float]:
    """KL of Pyro SVI (AutoMultivariateNormal, Adam) on one dataset, and its time."""
    pyro.clear_param_store()
    guide = AutoMultivariateNormal(family.model)
    svi = SVI(family.model, guide, pyro.optim.Adam({"lr": learning_rate}), Trace_ELBO())
    started = time.perf_counter()
    for _ in range(steps):
        svi.step(x, y)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        kl = torch.distributions.kl_divergence(guide.get_posterior(), family.exact_posterior(x, y))
    return float(kl), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--steps", type=int, default=120, help="meta-training steps")
    parser.add_argument("--num-points", type=int, default=1024, help="held-out dataset size")
    parser.add_argument("--tasks", type=int, default=64, help="held-out datasets")
    parser.add_argument("--svi-tasks", type=int, default=4, help="datasets given to SVI")
    parser.add_argument("--svi-steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pyro.set_rng_seed(0)

    family = LinearRegression(dim=args.dim, noise_scale=0.5)
    guide = IterativeAmortizedGuide(family, encoder="deep_sets", batch_size=args.batch_size)
    result = fit(
        guide,
        family,
        steps=args.steps,
        tasks_per_step=16,
        num_points=(16, 256),
        objective="mixed",
        learning_rate=3e-3,
    )
    print(f"meta-trained {result.steps} steps in {result.seconds:.0f} s")

    _, x, y = family.sample(args.tasks, args.num_points, generator=torch.Generator().manual_seed(1))
    task = guide.prepare(x, y)
    exact = family.exact_posterior(x, y)
    started = time.perf_counter()
    with torch.no_grad():
        states = [state for state, _ in guide.trajectory(task)]
    seconds = (time.perf_counter() - started) / args.tasks
    print(f"\nheld-out: {args.tasks} datasets of N = {args.num_points} (trained on N <= 256)")
    print(f"{'refinement step':>16} {'median KL (nats)':>17}")
    for step, state in enumerate(states):
        kl = kl_to_exact(state, guide.refiner.family, task.layout, exact)
        print(f"{step:>16} {float(kl.median()):>17.4f}")

    svi = [svi_baseline(family, x[i], y[i], args.svi_steps, 0.02) for i in range(args.svi_tasks)]
    svi_kl = sorted(kl for kl, _ in svi)[len(svi) // 2]
    svi_seconds = sum(s for _, s in svi) / len(svi)
    print(f"\namortized guide: {seconds * 1e3:.1f} ms per dataset (batched)")
    print(
        f"Pyro SVI, AutoMultivariateNormal, {args.svi_steps} Adam steps: median KL "
        f"{svi_kl:.4f} nats, {svi_seconds:.2f} s per dataset ({svi_seconds / seconds:.0f}x slower)"
    )


if __name__ == "__main__":
    main()
