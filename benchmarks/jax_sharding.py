"""Wall time of one JAX meta-training step on 1 vs W host devices (``fit(devices=W)``).

    python benchmarks/jax_sharding.py               # 32 tasks per step, N ~ U{16…256}
    python benchmarks/jax_sharding.py --quick       # 8 tasks per step, N ~ U{8…64}
    python benchmarks/jax_sharding.py --devices 4   # 1 vs 4 host devices

The host devices are made by ``XLA_FLAGS=--xla_force_host_platform_device_count=W``, set
here before JAX starts; each is one single-threaded XLA CPU device (``--threads 1``). For
each layout one ``fit`` (``LinearRegression``, d = 8, mixed objective, seed 0) runs
``--steps`` steps; step 1 compiles, and the table gives the median wall time of the
others (``FitResult.step_seconds``) and the load average. Host devices
share this machine's cores, so the speed-up is bounded by the free cores, not by W.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from common import Report, base_parser, limit_threads, markdown_table


def main(argv=None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2, help="host devices W to compare")
    parser.add_argument("--steps", type=int, default=6, help="steps per layout (first compiles)")
    args = parser.parse_args(argv)
    # first: XLA stops reading XLA_FLAGS at the bare option that limit_threads appends
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["XLA_FLAGS"] = f"{flag} {os.environ.get('XLA_FLAGS', '')}".strip()
    limit_threads(args.threads)

    import jax

    from iai_prob.models import LinearRegression
    from iai_prob.numpyro import IterativeAmortizedGuide, fit

    if len(jax.devices()) < args.devices:
        print(f"JAX sees {len(jax.devices())} device(s), not {args.devices}", file=sys.stderr)
        return 1
    tasks_per_step = 8 if args.quick else 32
    options = {
        "steps": args.steps,
        "tasks_per_step": tasks_per_step,
        "num_points": (8, 64) if args.quick else (16, 256),
        "objective": "mixed",
        "progress": False,
    }
    rows, baseline, params = [], None, {}
    for devices in (None, args.devices):
        guide = IterativeAmortizedGuide(LinearRegression(dim=8).on("numpyro"))
        result = fit(guide, guide.family, devices=devices, **options)
        step = float(np.median(result.step_seconds[1:]))
        baseline = baseline or step
        params[devices] = [np.asarray(v) for v in jax.tree_util.tree_leaves(result.params)]
        rows.append(
            [
                devices or 1,
                tasks_per_step,
                f"{result.step_seconds[0]:.1f} s",
                f"{step * 1e3:.1f} ms",
                f"{baseline / step:.2f}",
            ]
        )
    difference = max(
        float(np.abs(a - b).max()) for a, b in zip(params[None], params[args.devices], strict=True)
    )
    report = Report()
    report.add(f"## One training step on 1 vs {args.devices} host devices\n")
    headers = ["devices", "tasks / step", "first step (compiles)", "step (median)", "speed-up"]
    report.add(markdown_table(headers, rows) + "\n")
    report.add(f"largest parameter difference after {args.steps} steps: {difference:.2g}\n")
    report.add(f"load average at the end: {os.getloadavg()}\n")
    report.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
