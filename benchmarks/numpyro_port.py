"""The NumPyro port against the PyTorch guide, measured in the same run.

    python benchmarks/numpyro_port.py             # N in {16, 64, 256}, 128 held-out tasks
    python benchmarks/numpyro_port.py --quick     # N in {16, 256}, 32 tasks

Three Markdown tables:

1. accuracy on ``LinearRegression`` (d = 8, σ = 0.5): median KL(q ‖ exact posterior) of
   the shipped ``linear_regression`` checkpoint refined by each backend on the same
   held-out tasks (each backend with its own seeded mini-batch order), against the
   library's target (0.1 nats for N ≤ 256);
2. batched inference throughput (datasets per second for one batch of tasks, after
   compilation) and the ratio JAX / PyTorch;
3. one meta-training step (16 tasks, N ~ U{16…256}, mixed objective): PyTorch as the time
   of ``fit(steps=4)`` minus ``fit(steps=1)`` over 3, JAX as the median wall time of
   steps 2–4 of one ``fit(steps=4)`` (``FitResult.step_seconds``; step 1 compiles).

Timings are on this machine's CPU with one thread per backend; compare them as ratios
within one run only.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from common import HELD_OUT_SEED, Report, base_parser, limit_threads, markdown_table, verdict

TARGET_KL = 0.1


def _torch_state(guide, x, y):
    task = guide.prepare(x, y)
    with torch.no_grad():
        return guide.final_state(task)


def accuracy_and_throughput(sizes, num_tasks, report):
    import jax
    import jax.numpy as jnp

    from iai_prob import pretrained as torch_pretrained
    from iai_prob.inference.objectives import kl_to_exact
    from iai_prob.numpyro import pretrained
    from iai_prob.numpyro.objectives import kl_to_exact as jax_kl_to_exact

    torch_guide = torch_pretrained.load("linear_regression")
    guide, params = pretrained.load("linear_regression")
    family = torch_guide.family
    accuracy_rows, speed_rows = [], []
    for size in sizes:
        generator = torch.Generator().manual_seed(HELD_OUT_SEED + size)
        _, x, y = family.sample(num_tasks, size, generator=generator)
        exact = family.exact_posterior(x, y)
        start = time.perf_counter()
        state = _torch_state(torch_guide, x, y)
        torch_seconds = time.perf_counter() - start
        task = torch_guide.prepare(x, y)
        torch_kl = kl_to_exact(state, torch_guide.refiner.family, task.layout, exact)
        jx, jy = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
        jax_task = guide.prepare(jx, jy)
        start = time.perf_counter()
        final = jax.block_until_ready(guide.final_state(params, jax_task))
        compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(3):
            final = jax.block_until_ready(guide.final_state(params, guide.prepare(jx, jy)))
        jax_seconds = (time.perf_counter() - start) / 3
        start = time.perf_counter()
        for _ in range(3):
            _torch_state(torch_guide, x, y)
        torch_seconds = (time.perf_counter() - start) / 3
        jax_exact = guide.family.exact_posterior(jx, jy)
        jax_kl = np.asarray(jax_kl_to_exact(final.loc, final.precision, jax_exact))
        torch_median, jax_median = float(torch_kl.median()), float(np.median(jax_kl))
        accuracy_rows.append(
            [
                size,
                f"{torch_median:.4f}",
                f"{jax_median:.4f}",
                f"{np.quantile(jax_kl, 0.9):.4f}",
                verdict(jax_median < TARGET_KL),
            ]
        )
        speed_rows.append(
            [
                size,
                num_tasks,
                f"{num_tasks / torch_seconds:.1f}",
                f"{num_tasks / jax_seconds:.1f}",
                f"{torch_seconds / jax_seconds:.2f}",
                f"{compile_seconds:.1f} s",
            ]
        )
    report.add("## LinearRegression accuracy: median KL(q ‖ exact), shipped checkpoint\n")
    report.add(
        markdown_table(["N", "PyTorch", "JAX", "JAX 90 %", f"JAX < {TARGET_KL}"], accuracy_rows)
        + "\n"
    )
    report.add("## Batched inference throughput (datasets / s, one batch, after compilation)\n")
    report.add(
        markdown_table(
            ["N", "tasks", "PyTorch", "JAX", "ratio JAX/PyTorch", "JAX first call"], speed_rows
        )
        + "\n"
    )


def training_step(report, tasks_per_step=16):
    from iai_prob.inference import IterativeAmortizedGuide as TorchGuide
    from iai_prob.inference import fit as torch_fit
    from iai_prob.models import LinearRegression
    from iai_prob.numpyro import IterativeAmortizedGuide, fit

    options = {
        "tasks_per_step": tasks_per_step,
        "num_points": (16, 256),
        "objective": "mixed",
        "progress": False,
    }

    def torch_seconds(steps):
        guide = TorchGuide(LinearRegression())
        start = time.perf_counter()
        torch_fit(guide, guide.family, steps=steps, **options)
        return time.perf_counter() - start

    rows = []
    torch_step = (torch_seconds(4) - torch_seconds(1)) / 3
    guide = IterativeAmortizedGuide(LinearRegression().on("numpyro"))
    result = fit(guide, guide.family, steps=4, **options)
    jax_one, jax_step = result.step_seconds[0], float(np.median(result.step_seconds[1:]))
    rows.append(
        [
            tasks_per_step,
            f"{torch_step:.2f} s",
            f"{jax_step:.2f} s",
            f"{torch_step / jax_step:.2f}",
            f"{jax_one:.0f} s",
        ]
    )
    report.add("## One meta-training step (set transformer, full rank, mixed objective)\n")
    report.add(
        markdown_table(
            ["tasks/step", "PyTorch", "JAX", "speed-up JAX", "JAX first step (compiles)"], rows
        )
        + "\n"
    )


def main(argv=None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--no-training", action="store_true", help="skip the training table")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    report = Report()
    report.add(f"machine: {os.cpu_count()} CPUs, {args.threads} thread(s) per backend\n")
    sizes, num_tasks = ((16, 256), 32) if args.quick else ((16, 64, 256), 128)
    accuracy_and_throughput(sizes, num_tasks, report)
    if not args.no_training:
        training_step(report)
    report.save(args.out)


if __name__ == "__main__":
    sys.exit(main())
