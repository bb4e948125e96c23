"""One JAX process of a multi-process (or, with ``--host-devices 2``, multi-device)
``fit(devices=2)`` run, for ``test_multiprocess.py``: ``python _jax_process.py FOLDER STEPS
(--process I --port P | --host-devices 2)``."""

import argparse
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("folder")
parser.add_argument("steps", type=int)
parser.add_argument("--process", type=int)
parser.add_argument("--port")
parser.add_argument("--host-devices", type=int)
args = parser.parse_args()
if args.host_devices:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={args.host_devices}"
    )

import jax  # noqa: E402

import iai_prob.numpyro  # noqa: E402,F401  (its XLA guard, before any JAX computation)

if args.process is not None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{args.port}", num_processes=2, process_id=args.process
    )

from iai_prob.models import LinearRegression  # noqa: E402
from iai_prob.numpyro import IterativeAmortizedGuide, fit  # noqa: E402

family = LinearRegression(dim=2).on("numpyro")
guide = IterativeAmortizedGuide(family, encoder="deep_sets", batch_size=16)
try:
    fit(
        guide,
        family,
        steps=args.steps,
        tasks_per_step=8,
        num_points=(8, 16),
        progress=False,
        validation_tasks=0,
        devices=2,
        checkpoint_dir=args.folder,
    )
except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
