"""The NumPyro port on several JAX processes (``jax.distributed.initialize``, the recipe
of docs/reliability.md, "Several machines"), run as two processes of one CPU device each
on the loopback interface: one run, written by process 0, equal to one process's run on
two devices; a resume one process cannot see is refused by both."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iai_prob.inference.checkpoint import read_checkpoint

pytest.importorskip("jax")

CHILD = Path(__file__).with_name("_jax_process.py")
ROOT = Path(__file__).resolve().parents[2]


def _environment():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _two_processes(folders, steps: int) -> list[subprocess.CompletedProcess]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    child = [sys.executable, str(CHILD)]
    launched = [
        subprocess.Popen(
            [*child, str(folder), str(steps), "--process", str(i), "--port", port],
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, folder in enumerate(folders)
    ]
    done = []
    for process in launched:
        out, err = process.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


@pytest.mark.heavy
def test_two_jax_processes_train_as_one_process_on_two_devices(tmp_path):
    shared = tmp_path / "shared"
    for process in _two_processes([shared, shared], steps=2):
        assert process.returncode == 0, process.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, str(CHILD), str(tmp_path / "single"), "2", "--host-devices", "2"],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    (expected, _), (got, card) = (
        read_checkpoint(f / "last") for f in (tmp_path / "single", shared)
    )
    assert card["step"] == 2 and expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)

    # process 1 cannot see the checkpoint: both refuse in one line instead of diverging
    for process in _two_processes([shared, tmp_path / "elsewhere"], steps=3):
        assert process.returncode == 2
        assert "disagree on the step to resume from" in process.stderr
        assert "from 0 to 2" in process.stderr
