"""Data-parallel JAX meta-training: each step's tasks sharded over devices (GSPMD).

The JAX twin of :mod:`iai_prob.inference.data_parallel`. The ``G`` tasks of a step are
laid out on a 1-D :class:`jax.sharding.Mesh` of ``W`` devices along the axis ``"tasks"``
(``NamedSharding(mesh, P("tasks"))``: device ``r`` holds the contiguous slice of ``G / W``
tasks), while the guide's parameters and the optimizer state are replicated
(``NamedSharding(mesh, P())``). The training step stays one ``jax.jit`` function; XLA's
SPMD partitioner (GSPMD) splits the per-task refinement over the devices and, since the
loss is the mean over tasks, turns the sum inside that mean into an all-reduce, so every
device applies the gradient of the mean loss over the global batch,

    ∇ (1/G) Σ_t ℓ_t = (1/G) Σ_r Σ_{t ∈ shard r} ∇ ℓ_t,

and the replicated optimizer update keeps the devices' parameters identical. The tasks
themselves are simulated inside the step from the key of ``(seed, step)``; JAX's
partitionable threefry (``jax_threefry_partitionable``, on by default) makes the random
bits independent of the layout, so ``W`` devices train on exactly the global batch one
device would draw, and the results agree up to the order of floating-point sums.

``fit(..., devices=...)`` uses :func:`task_mesh`; ``devices=None`` (default) is today's
single-device step, untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["AXIS", "SINGLE_DEVICE", "TaskMesh", "task_mesh"]

AXIS = "tasks"
"""The name of the mesh axis that the tasks of a step are split along."""


class TaskMesh:
    """A 1-D device mesh over which a step's task batch is sharded.

    :param mesh: a :class:`jax.sharding.Mesh` with the single axis ``"tasks"``, or
        ``None`` for JAX's default device, where every method is the identity.
    """

    def __init__(self, mesh: Mesh | None = None):
        self.mesh = mesh
        if mesh is None:
            return
        if tuple(mesh.axis_names) != (AXIS,):
            raise ValueError(
                f"devices: the mesh must be 1-D with the axis {AXIS!r}, got axes "
                f"{tuple(mesh.axis_names)}"
            )
        self.tasks = NamedSharding(mesh, PartitionSpec(AXIS))
        self.replicated = NamedSharding(mesh, PartitionSpec())

    @property
    def size(self) -> int:
        """The number of devices ``W``."""
        return 1 if self.mesh is None else self.mesh.size

    def check(self, tasks_per_step: int) -> None:
        """Refuse a global batch that does not split evenly over the devices."""
        if tasks_per_step % self.size:
            raise ValueError(
                f"tasks_per_step={tasks_per_step} must be divisible by the number of devices "
                f"({self.size}) so that every device gets the same number of tasks"
            )

    def replicate(self, tree):
        """Place every array of ``tree`` (parameters, optimizer state) on all devices."""
        if self.mesh is None:
            return tree
        return jax.device_put(tree, self.replicated)

    def shard_tasks(self, tree):
        """Constrain every array of ``tree`` to be split along its leading (task) axis.

        Call inside the jitted step on the freshly simulated batch; arrays without a task
        axis (scalars) are left to the partitioner.
        """
        if self.mesh is None:
            return tree

        def constrain(value):
            if np.ndim(value) == 0:
                return value
            return jax.lax.with_sharding_constraint(value, self.tasks)

        return jax.tree_util.tree_map(constrain, tree)


def task_mesh(devices, tasks_per_step: int) -> TaskMesh:
    """The :class:`TaskMesh` that ``fit(..., devices=devices)`` trains on.

    :param devices: ``None`` (JAX's default device, no sharding), a number ``W`` of devices (the
        first ``W`` of :func:`jax.devices`), a sequence of devices, or a 1-D
        :class:`~jax.sharding.Mesh` with the axis ``"tasks"``.
    :param int tasks_per_step: the global batch ``G``, which must be divisible by ``W``.
    """
    if devices is None:
        return SINGLE_DEVICE
    if isinstance(devices, Mesh):
        placement = TaskMesh(devices)
    else:
        if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
            available = jax.devices()
            if not 1 <= devices <= len(available):
                raise ValueError(
                    f"devices={devices} but JAX sees {len(available)} device(s) "
                    f"({available[0].platform}); for host devices set XLA_FLAGS="
                    "--xla_force_host_platform_device_count=N before JAX starts"
                )
            devices = available[:devices]
        if not isinstance(devices, Sequence) or not devices:
            raise ValueError(
                "devices must be None, a number of devices, a non-empty sequence of "
                f"jax devices or a jax.sharding.Mesh with the axis {AXIS!r}, got {devices!r}"
            )
        placement = TaskMesh(Mesh(np.asarray(devices), (AXIS,)))
    placement.check(tasks_per_step)
    return placement


SINGLE_DEVICE = TaskMesh()
"""No mesh: the step runs on JAX's default device, as ``fit`` without ``devices`` does."""
