"""CUDA smoke test: train, refine and time a guide on a GPU, when one is present.

    python benchmarks/cuda_smoke.py                 # on cuda; exits 0 with a message without one
    python benchmarks/cuda_smoke.py --device cpu    # the same code path on the CPU

It (1) meta-trains a small linear-regression guide with ``fit(device=...)``, (2) refines
the posterior of a held-out dataset of 4,096 points on the device and measures its exact
KL, (3) loads the shipped ``linear_regression`` guide onto the device and checks that it
gives the CPU's answer, and (4) times batched posteriors for 1 … 256 tasks. Every number
printed is measured in this run.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from iai_prob.inference import IterativeAmortizedGuide, fit
from iai_prob.models import LinearRegression

__all__ = ["main"]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device, function, repeats: int = 3) -> tuple[object, float]:
    """``function()`` and its best wall time over ``repeats`` calls, in seconds."""
    best, result = float("inf"), None
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        result = function()
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return result, best


def _exact_kl(family, guide, x, y) -> float:
    posterior = guide.posterior(x, y)
    exact = family.exact_posterior(x.double().cpu(), y.double().cpu())
    q = torch.distributions.MultivariateNormal(
        posterior.mean.double().cpu(), posterior.covariance_matrix.double().cpu()
    )
    return float(torch.distributions.kl_divergence(q, exact))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    parser.add_argument("--steps", type=int, default=200, help="meta-training steps")
    parser.add_argument("--quick", action="store_true", help="a few steps and small sizes")
    return parser


def main(argv=None) -> int:
    """Run the smoke test; returns the exit code (0 also when CUDA is absent)."""
    options = _parser().parse_args(argv)
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"cuda_smoke: no CUDA device available (torch {torch.__version__}); skipped.")
        return 0
    steps = 3 if options.quick else options.steps
    num_points = 4096 if not options.quick else 256
    batch_sizes = (1, 16, 256) if not options.quick else (1, 4)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"cuda_smoke on {device} ({name}), torch {torch.__version__}")

    family = LinearRegression(dim=8, noise_scale=0.5)
    torch.manual_seed(0)
    guide = IterativeAmortizedGuide(family, batch_size=64)
    result, seconds = _timed(
        device,
        lambda: fit(
            guide,
            family,
            steps=steps,
            tasks_per_step=4 if options.quick else 32,
            num_points=(16, 256),
            device=device,
        ),
        repeats=1,
    )
    parameter = next(guide.refiner.parameters())
    assert parameter.device.type == device.type, parameter.device
    print(
        f"1. fit: {steps} steps in {seconds:.1f} s ({seconds / steps:.3f} s/step), "
        f"last loss {result.losses[-1]:.4g}, skipped {result.skipped}"
    )

    _, x, y = family.sample(1, num_points, generator=torch.Generator().manual_seed(10**9))
    x, y = x[0].to(device), y[0].to(device)
    posterior = guide.posterior(x, y)
    assert posterior.mean.device.type == device.type
    print(
        f"2. refine N={num_points} on {device}: KL(q || exact) = "
        f"{_exact_kl(family, guide, x, y):.4g} nats after {steps} training steps"
    )

    from iai_prob import pretrained

    shipped_device = pretrained.load("linear_regression", device=device)
    shipped_cpu = pretrained.load("linear_regression")
    on_device = shipped_device.posterior(x, y).mean.cpu()
    on_cpu = shipped_cpu.posterior(x.cpu(), y.cpu()).mean
    difference = float((on_device - on_cpu).abs().max())
    print(
        f"3. shipped guide: KL(q || exact) = {_exact_kl(family, shipped_device, x, y):.4g} "
        f"nats on {device}; max |mean({device}) - mean(cpu)| = {difference:.2e}"
    )

    print(f"4. batched posterior latency on {device} (N = {num_points // 4} points per task):")
    print("| tasks | seconds | tasks / s |\n|---:|---:|---:|")
    for num_tasks in batch_sizes:
        _, xs, ys = family.sample(num_tasks, num_points // 4, generator=torch.Generator())
        xs, ys = xs.to(device), ys.to(device)
        _, seconds = _timed(device, lambda xs=xs, ys=ys: shipped_device.posterior(xs, ys))
        print(f"| {num_tasks} | {seconds:.4f} | {num_tasks / seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
