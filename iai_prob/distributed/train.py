"""``iai train`` on several processes: launched here by ``torchrun``, joined there.

``iai train ... --nproc N`` on one machine runs

    python -m torch.distributed.run --standalone --nproc_per_node N -m iai_prob.cli train ...

(:func:`launch`): torchrun starts ``N`` copies of the same ``iai train`` command, and each
joins the process group torchrun describes in its environment (:func:`processes`:
``gloo`` on CPUs, ``nccl`` with ``--device cuda``, one GPU per process, ``LOCAL_RANK``).
On several machines the user runs torchrun on each, with a rendezvous endpoint, and the
same ``iai train`` line (``docs/reliability.md``, "Several machines"). Any model ``iai
train`` takes (a task family, ``module:function`` with its covariates, a collection of
real datasets) trains the same way: every process draws its own share of each step's
tasks and its own noise, gradients are averaged, and rank 0 writes the checkpoints
(:mod:`iai_prob.inference.data_parallel`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from iai_prob.inference.data_parallel import DataParallel, init_from_environment

__all__ = ["launch", "local_device", "processes", "under_torchrun"]


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (its ``WORLD_SIZE`` is set)."""
    return "WORLD_SIZE" in os.environ


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``iai *argv`` on ``nproc`` processes of this machine under ``torchrun
    --standalone`` and return its exit status. Each process uses one thread unless
    ``OMP_NUM_THREADS`` says otherwise."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "iai_prob.cli",
        "--",  # what follows is iai's: an option such as --nproc is not torchrun's
        *argv,
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(command, env=environment, check=False).returncode


@contextmanager
def processes(device: torch.device, nproc: int | None = None) -> Iterator[DataParallel]:
    """The process group of this process (one process outside torchrun) for the block,
    destroyed afterwards: ``nccl`` for a CUDA ``device`` (:func:`local_device`), else
    ``gloo``.

    :raises ValueError: ``nproc`` is given and is not torchrun's world size.
    """
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if nproc is not None and nproc != world_size:
        raise ValueError(
            f"--nproc {nproc} but torchrun started {world_size} process(es) (WORLD_SIZE); "
            "under torchrun leave --nproc out or give the same number"
        )
    parallel = init_from_environment(device)
    try:
        yield parallel
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def local_device(device: str) -> torch.device:
    """``device`` for this process: ``cuda`` means GPU ``LOCAL_RANK`` under torchrun."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device
