"""Nothing lost: a training process killed with SIGKILL resumes from its last checkpoint
and, with the same seed, ends with exactly the parameters of an uninterrupted run."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from iai_prob.inference.checkpoint import read_checkpoint

CHILD = Path(__file__).with_name("_fit_child.py")
ROOT = Path(__file__).resolve().parents[2]
STEPS = 5
KILL_AFTER = 2  # kill once the checkpoint of this step is on disk


def _child_module():
    spec = importlib.util.spec_from_file_location("_fit_child", CHILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _start(directory, delay):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), str(STEPS), str(delay)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _checkpoint_step(directory) -> int:
    try:
        return json.loads((directory / "last.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    directory = tmp_path / "run"
    process = _start(directory, delay=0.3)
    deadline = time.monotonic() + 120
    while _checkpoint_step(directory) < KILL_AFTER:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the training child made no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    killed_at = _checkpoint_step(directory)
    assert KILL_AFTER <= killed_at < STEPS, killed_at  # it really died mid-run

    resumed = _start(directory, delay=0.0)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()[-2000:]
    tensors, card = read_checkpoint(directory / "last")
    assert card["step"] == STEPS and len(card["losses"]) == STEPS
    # only the committed weights remain: no half-written or superseded files
    names = sorted(path.name for path in directory.iterdir())
    assert names == sorted(["guide.json", "guide.safetensors", "last.json", card["weights_file"]])

    torch.set_num_threads(1)
    straight = _child_module().run(tmp_path / "straight", STEPS, 0.0)
    expected = straight.refiner.state_dict()
    found = {k[len("guide.") :]: v for k, v in tensors.items() if k.startswith("guide.")}
    assert set(found) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(found[name], value, rtol=1e-6, atol=1e-7, msg=name)
    reference = json.loads((tmp_path / "straight" / "last.json").read_text())["losses"]
    assert card["losses"] == pytest.approx(reference, rel=1e-6)
