"""Data-parallel meta-training of a task family's guide, launched by ``torchrun``:

    torchrun --nproc_per_node 2 -m iai_prob.distributed.train linear_regression \\
        --out runs/lr --steps 500 --tasks-per-step 64

Every process builds the same guide (same seed, then rank 0's weights are broadcast, as
DistributedDataParallel does), trains on its slice of each step's ``--tasks-per-step``
global tasks with gradients averaged over processes
(:mod:`iai_prob.inference.data_parallel`), and rank 0 writes the resumable checkpoints.
The result equals a single process training with the same global batch, up to the
order of floating-point sums (tested with 2 CPU processes on gloo). The ``gloo`` backend
is used on CPUs, ``nccl`` with ``--device cuda`` (each process takes GPU ``LOCAL_RANK``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.distributed as torch_dist

from iai_prob.inference import IterativeAmortizedGuide, fit
from iai_prob.inference.data_parallel import init_from_environment
from iai_prob.models import get_family

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iai_prob.distributed.train", description=__doc__)
    parser.add_argument("family", help="task family name, e.g. linear_regression")
    parser.add_argument("--config", help="family arguments as JSON, e.g. '{\"dim\": 4}'")
    parser.add_argument("--out", required=True, help="checkpoint folder (resumes if present)")
    parser.add_argument("--posterior", default="full_rank")
    parser.add_argument("--encoder", default="set_transformer")
    parser.add_argument("--encoder-options", help="encoder arguments as JSON")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--tasks-per-step", type=int, default=32, help="global, all processes")
    parser.add_argument("--min-points", type=int, default=16)
    parser.add_argument("--max-points", type=int, default=256)
    parser.add_argument("--objective", default="reverse_kl")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    return parser


def main(argv=None) -> int:
    """Train (see module docstring); returns the exit code."""
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
    parallel = init_from_environment(device)
    try:
        family = get_family(args.family, **(json.loads(args.config) if args.config else {}))
        torch.manual_seed(args.seed)
        guide = IterativeAmortizedGuide(
            family,
            family=args.posterior,
            encoder=args.encoder,
            encoder_options=json.loads(args.encoder_options) if args.encoder_options else None,
            batch_size=args.batch_size,
        )
        first = family.sample(1, max(args.min_points, 2), generator=torch.Generator())
        guide._setup_prototype(first[1][0].to(device), first[2][0].to(device))
        guide.refiner.to(device)
        parallel.broadcast_parameters(guide.refiner)
        result = fit(
            guide,
            family,
            steps=args.steps,
            tasks_per_step=args.tasks_per_step,
            num_points=(args.min_points, args.max_points),
            objective=args.objective,
            learning_rate=args.learning_rate,
            checkpoint_dir=args.out,
            checkpoint_every=args.checkpoint_every,
            seed=args.seed,
            device=device,
            parallel=parallel,
        )
        if parallel.is_writer:
            print(
                f"trained {result.steps} steps on {parallel.world_size} process(es) in "
                f"{result.seconds:.1f} s; guide in {args.out}/guide.json"
            )
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
