"""Data-parallel meta-training: ``torchrun`` with 2 CPU processes on gloo gives the
weights of one process trained on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iai_prob.distributed.train import main
from iai_prob.inference.checkpoint import read_checkpoint
from iai_prob.inference.data_parallel import DataParallel
from iai_prob.inference.sources import TaskBatch

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "linear_regression",
    "--config",
    '{"dim": 2}',
    "--encoder",
    "deep_sets",
    "--encoder-options",
    '{"embed_dim": 16, "hidden_dim": 32}',
    "--steps",
    "4",
    "--min-points",
    "8",
    "--max-points",
    "16",
    "--batch-size",
    "8",
    "--objective",
    "forward_kl",  # no Monte Carlo noise: the comparison is exact up to summation order
]


def _weights(directory):
    """The weights and optimizer state after the last step (the folder's ``guide`` is the
    best by validation, which after 4 steps can be the untrained one in every run)."""
    tensors, _ = read_checkpoint(directory / "last")
    return {k: v for k, v in tensors.items() if not k.startswith("best.")}


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    script = ["-m", "iai_prob.distributed.train", *ARGS, "--tasks-per-step", "8"]
    completed = subprocess.run(
        [*launcher, "2", *script, "--out", str(tmp_path / "ddp")],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr.decode()[-3000:]
    assert b"on 2 process(es)" in completed.stdout

    main([*ARGS, "--tasks-per-step", "8", "--out", str(tmp_path / "single")])
    main([*ARGS, "--tasks-per-step", "4", "--out", str(tmp_path / "half")])
    ddp, single, half = (_weights(tmp_path / n) for n in ("ddp", "single", "half"))
    assert set(ddp) == set(single)
    for name, value in single.items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # one process's own 4 tasks alone would have trained to other weights
    assert max(float((half[k] - single[k]).abs().max()) for k in single) > 1e-4
    losses = [
        json.loads((tmp_path / n / "last.json").read_text())["losses"] for n in ("ddp", "single")
    ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_shards_partition_the_global_batch():
    x, theta = torch.arange(24.0).reshape(6, 4), {"w": torch.arange(6.0)}
    shards = [DataParallel(rank, 3).shard(TaskBatch((x, 7), theta)) for rank in range(3)]
    torch.testing.assert_close(torch.cat([s.args[0] for s in shards]), x)
    torch.testing.assert_close(torch.cat([s.theta["w"] for s in shards]), theta["w"])
    assert all(s.args[1] == 7 for s in shards)  # non-tensor arguments pass through


@pytest.mark.parametrize(("rank", "world_size", "tasks"), [(2, 2, 8), (-1, 2, 8), (0, 3, 8)])
def test_bad_process_layouts_are_named(rank, world_size, tasks):
    with pytest.raises(ValueError, match=r"rank|divisible"):
        DataParallel(rank, world_size).local_tasks(tasks)
