"""Data-parallel meta-training over ``torch.distributed`` processes (launched by ``torchrun``).

Each of the ``W`` processes draws its *own* ``G / W`` tasks of a step's global batch of
``G``, with its own Monte Carlo noise, from generators seeded by ``(seed, step, rank,
W)`` (:func:`~iai_prob.inference.training.fit`; the step's ``N`` is common, drawn from
``(seed, step)``, so the processes stay in step), and computes the mean loss over them.
Averaging the gradients over processes then gives the gradient of the mean loss over
the ``G`` tasks,

    ∇ (1/G) Σ_t ℓ_t = (1/W) Σ_r ∇ (1/(G/W)) Σ_{t ∈ tasks of r} ℓ_t,

which is what DistributedDataParallel computes. A run on ``W`` processes is therefore a
run of the same distribution as one process with the same ``G`` (the same expected
update; not the same draws) and is reproducible for a given ``(seed, W)``; with
``W = 1`` the draws are those of a run without ``torchrun``. The guide's refinement is a loop of
``init``/``step`` calls, not one ``forward``, so the gradients are all-reduced here in
one flattened bucket after ``backward`` rather than by DDP's forward hooks. The
decision to skip a step with a non-finite loss or gradient is taken jointly, so the
processes' weights never diverge, and only rank 0 writes checkpoints.

Single process: :data:`SINGLE_PROCESS` (every method is the identity).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as torch_dist

__all__ = ["SINGLE_PROCESS", "DataParallel", "init_from_environment"]


class DataParallel:
    """The ``rank``-th of ``world_size`` training processes.

    :param int rank: this process's index.
    :param int world_size: number of processes ``W``.
    :param device: where the collectives' own small tensors live: the process's GPU under
        ``nccl`` (which reduces CUDA tensors only), the CPU (default) under ``gloo``.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, device=None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device if device is not None else "cpu")

    @property
    def is_writer(self) -> bool:
        """Whether this process writes checkpoints (rank 0)."""
        return self.rank == 0

    def local_tasks(self, tasks_per_step: int) -> int:
        """How many of a step's ``G = tasks_per_step`` tasks this process draws: ``G / W``
        (a ``G`` that does not split evenly is refused)."""
        if tasks_per_step % self.world_size:
            raise ValueError(
                f"tasks_per_step={tasks_per_step} must be divisible by the number of processes "
                f"({self.world_size}) so that every process gets the same number of tasks"
            )
        return tasks_per_step // self.world_size

    def all_finite(self, finite: bool) -> bool:
        """``True`` when ``finite`` holds on every process."""
        if self.world_size == 1:
            return finite
        flag = torch.tensor([0.0 if finite else 1.0], device=self.device)
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        return bool(flag.item() == 0.0)

    def check_same(self, value: int, what: str) -> None:
        """Raise ``ValueError`` naming ``what`` unless every process holds the same
        integer ``value`` (e.g. the step a run resumes from)."""
        if self.world_size == 1:
            return
        bounds = torch.tensor([value, -value], dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(bounds, op=torch_dist.ReduceOp.MAX)
        high, low = int(bounds[0].item()), -int(bounds[1].item())
        if high != low:
            raise ValueError(
                f"the {self.world_size} processes disagree on {what}: from {low} to {high}"
            )

    def average_gradients(self, parameters) -> None:
        """Replace every gradient by its mean over processes (one flattened all-reduce)."""
        if self.world_size == 1:
            return
        parameters = [p for p in parameters if p.requires_grad]
        grads = [
            torch.zeros_like(p) if p.grad is None else p.grad for p in parameters
        ]  # a parameter unused on one rank still takes part in the reduction
        flat = torch.cat([g.reshape(-1) for g in grads])
        device = flat.device
        flat = flat.cpu() if torch_dist.get_backend() == "gloo" else flat
        torch_dist.all_reduce(flat)
        flat = (flat / self.world_size).to(device)
        offset = 0
        for parameter, grad in zip(parameters, grads, strict=True):
            numel = grad.numel()
            parameter.grad = flat[offset : offset + numel].view_as(grad).clone()
            offset += numel

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's parameters and buffers (as DDP does at start)."""
        if self.world_size == 1:
            return
        for tensor in [*module.parameters(), *module.buffers()]:
            staged = tensor.detach().cpu() if torch_dist.get_backend() == "gloo" else tensor.data
            torch_dist.broadcast(staged, src=0)
            tensor.data.copy_(staged)

    def mean(self, value: float) -> float:
        """The mean of a float over processes (for logged losses)."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size


SINGLE_PROCESS = DataParallel()
"""The trivial group of one process: what :func:`fit` uses when not launched by ``torchrun``."""


def init_from_environment(device=None) -> DataParallel:
    """Join the process group that ``torchrun`` describes in the environment.

    Uses the ``nccl`` backend for CUDA devices and ``gloo`` otherwise; without
    ``torchrun``'s ``WORLD_SIZE`` it returns :data:`SINGLE_PROCESS`.
    """
    if "WORLD_SIZE" not in os.environ:
        return SINGLE_PROCESS
    cuda = device is not None and torch.device(device).type == "cuda"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if cuda else "gloo")
    collectives = device if cuda and torch_dist.get_backend() == "nccl" else None
    return DataParallel(torch_dist.get_rank(), torch_dist.get_world_size(), collectives)
