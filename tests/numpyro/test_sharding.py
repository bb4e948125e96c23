"""Data-parallel JAX training: ``fit(devices=2)`` on 2 host devices gives the parameters
of one device trained on the same global batch, with the batch really split in two.

The host devices exist only if ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` is
set before JAX initializes, hence a subprocess (the twin of
``tests/distributed/test_train.py`` for the PyTorch processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from iai_prob.numpyro.sharding import AXIS, SINGLE_DEVICE, TaskMesh, task_mesh

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
import jax, numpy as np
from iai_prob.numpyro import IterativeAmortizedGuide, fit
from iai_prob.models import LinearRegression
from iai_prob.numpyro.sharding import TaskMesh, task_mesh

assert len(jax.devices()) == 2, jax.devices()
family = LinearRegression(dim=2).on("numpyro")
options = {"steps": 3, "num_points": (4, 8), "max_passes": 1, "objective": "mixed",
           "progress": False, "seed": 3}
small = {"encoder": "deep_sets", "encoder_options": {"embed_dim": 8, "hidden_dim": 16}}
guide = lambda: IterativeAmortizedGuide(family, batch_size=8, **small)
report = {}

# what the compiled step sees: the sharding of the simulated batch inside fit
seen = []
original = TaskMesh.shard_tasks
def recording(self, tree):
    tree = original(self, tree)
    for leaf in jax.tree_util.tree_leaves(tree) if self.mesh is not None else []:
        jax.debug.inspect_array_sharding(leaf, callback=lambda s: seen.append(str(s.spec)))
    return tree
TaskMesh.shard_tasks = recording

runs = {}
for name, devices, tasks in [("one", None, 4), ("two", 2, 4)]:
    result = fit(guide(), family, tasks_per_step=tasks, devices=devices, **options)
    runs[name] = [np.asarray(v) for v in jax.tree_util.tree_leaves(result.params)]
    report[name + "_losses"] = result.losses
    leaf = jax.tree_util.tree_leaves(result.params)[0]
    report[name + "_param_devices"] = len(leaf.sharding.device_set)
    report[name + "_param_replicated"] = bool(leaf.sharding.is_fully_replicated)
report["inside_fit"] = seen
difference = lambda a, b: max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
report["max_difference"] = difference(runs["one"], runs["two"])

# the batch that shard_tasks lays out: contiguous halves, the same values as unsharded
mesh = task_mesh(2, 4)
key = jax.random.PRNGKey(0)
_, x, _ = jax.jit(lambda k: mesh.shard_tasks(family.sample(k, 4, 8)))(key)
_, plain, _ = jax.jit(lambda k: family.sample(k, 4, 8))(key)
report["batch_spec"] = str(x.sharding.spec)
report["shards"] = [
    [shard.device.id, shard.index[0].start, shard.index[0].stop, list(shard.data.shape)]
    for shard in x.addressable_shards
]
report["batch_equal"] = bool(np.array_equal(np.asarray(x), np.asarray(plain)))
try:
    fit(guide(), family, tasks_per_step=3, devices=2, **options)
except ValueError as error:
    report["indivisible"] = str(error)
print("REPORT " + json.dumps(report))
"""


@pytest.mark.heavy  # 57 s of one CI worker (2026-12-07): `make test-all` runs it
def test_two_host_devices_match_one_device_with_the_same_global_batch():
    flags = os.environ.get("XLA_FLAGS", "")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2".strip(),
    }
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(ln for ln in completed.stdout.splitlines() if ln.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))

    # the same parameters and losses, up to the order of float32 sums
    assert report["max_difference"] < 1e-5
    np.testing.assert_allclose(report["two_losses"], report["one_losses"], rtol=1e-5)
    # parameters replicated on both devices; one device without `devices`
    assert report["two_param_devices"] == 2 and report["two_param_replicated"]
    assert report["one_param_devices"] == 1
    # inside the compiled step every simulated array is split along the task axis
    assert report["inside_fit"] and set(report["inside_fit"]) == {str(PartitionSpec(AXIS))}
    # the batch: device 0 holds tasks 0-1, device 1 tasks 2-3, the values unchanged
    assert report["batch_spec"] == str(PartitionSpec(AXIS))
    assert sorted(report["shards"]) == [[0, 0, 2, [2, 8, 2]], [1, 2, 4, [2, 8, 2]]]
    assert report["batch_equal"]
    assert (
        "tasks_per_step=3 must be divisible by the number of devices (2)" in report["indivisible"]
    )


def test_more_devices_than_jax_sees_are_refused():
    with pytest.raises(ValueError, match=r"devices=\d+ but JAX sees \d+ device"):
        task_mesh(len(jax.devices()) + 1, 8)
    with pytest.raises(ValueError, match="devices must be"):
        task_mesh([], 8)


def test_a_mesh_needs_the_tasks_axis():
    with pytest.raises(ValueError, match="axis 'tasks'"):
        task_mesh(Mesh(np.asarray(jax.devices()[:1]), ("data",)), 8)
    assert task_mesh(Mesh(np.asarray(jax.devices()[:1]), ("tasks",)), 7).size == 1


def test_without_devices_nothing_is_placed():
    assert task_mesh(None, 7) is SINGLE_DEVICE
    tree = {"x": np.ones(3)}
    assert SINGLE_DEVICE.replicate(tree) is tree
    assert SINGLE_DEVICE.shard_tasks(tree) is tree
    assert isinstance(SINGLE_DEVICE, TaskMesh) and SINGLE_DEVICE.size == 1
