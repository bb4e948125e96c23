"""Amortized inference for your own Pyro model: train on its prior predictive, then infer.

    python examples/custom_model.py --steps 300

The model has unknown weights and an unknown noise scale; the guide is trained on
simulated datasets of 16 to 256 points and then applied to a dataset of 5,000 points.
"""

import argparse
import contextlib
import time

import pyro
import pyro.distributions as dist
import torch

from iai_prob.inference import IterativeAmortizedGuide, PriorPredictiveTasks, fit


def model(x, y=None):
    """Regression with unknown noise; ``x`` is ``(N, d)`` or a batch of tasks ``(T, N, d)``."""
    tasks = pyro.plate("tasks", x.shape[0], dim=-2) if x.dim() == 3 else contextlib.nullcontext()
    with tasks:
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
        with pyro.plate("data", x.shape[-2], dim=-1):
            return pyro.sample("y", dist.Normal((x * w).sum(-1), sigma), obs=y)


def covariates(num_tasks, num_points, generator):
    return (torch.randn(num_tasks, num_points, 3, generator=generator),)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--num-points", type=int, default=5000)
    args = parser.parse_args(argv)
    pyro.set_rng_seed(0)

    guide = IterativeAmortizedGuide(model, family="full_rank", encoder="deep_sets", batch_size=64)
    fit(
        guide,
        PriorPredictiveTasks(model, covariates),
        steps=args.steps,
        tasks_per_step=16,
        num_points=(16, 256),
        progress=False,
    )

    true_w, true_sigma = torch.tensor([1.0, -0.5, 0.25]), 0.3
    x = torch.randn(args.num_points, 3)
    y = x @ true_w + true_sigma * torch.randn(args.num_points)
    started = time.perf_counter()
    median = guide.median(x, y)
    low, high = guide.quantiles([0.05, 0.95], x, y)["w"]
    seconds = time.perf_counter() - started
    print(f"posterior median w = {median['w'].tolist()}, sigma = {median['sigma'].item():.3f}")
    print(f"90% interval of w: {low.tolist()} .. {high.tolist()}  ({seconds * 1e3:.0f} ms)")
    print(f"truth: w = {true_w.tolist()}, sigma = {true_sigma}")
    return median


if __name__ == "__main__":
    main()
