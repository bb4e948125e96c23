"""Nothing lost: a training process killed with SIGKILL resumes from its last checkpoint
and, with the same seed, ends with exactly (bit for bit) the parameters and losses of an
uninterrupted run; from the API (``fit``) and from the CLI (``iai train``)."""

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

from iai_prob.cli import main
from iai_prob.inference.checkpoint import read_checkpoint
from iai_prob.training_folder import LOCK_NAME

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
    return _spawn([str(CHILD), str(directory), str(STEPS), str(delay)])


def _spawn(argv, **environment):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **environment}
    return subprocess.Popen(
        [sys.executable, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _checkpoint_step(directory) -> int:
    try:
        return json.loads((directory / "last.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def _kill_mid_run(process, directory):
    """SIGKILL ``process`` once its checkpoint of step ``KILL_AFTER`` is on disk."""
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


def _assert_finished_and_clean(directory):
    tensors, card = read_checkpoint(directory / "last")
    assert card["step"] == STEPS and len(card["losses"]) == STEPS
    # only the committed weights (and the folder's lock file) remain: no half-written or
    # superseded files
    names = sorted(path.name for path in directory.iterdir())
    expected = ["guide.json", "guide.safetensors", "last.json", card["weights_file"], LOCK_NAME]
    assert names == sorted(expected)
    return tensors, card


def _assert_same_run(tensors, card, reference_directory):
    reference, reference_card = read_checkpoint(reference_directory / "last")
    assert card["losses"] == reference_card["losses"]  # bit for bit
    assert tensors.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(tensors[name], value), name


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    directory = tmp_path / "run"
    _kill_mid_run(_start(directory, delay=0.3), directory)

    resumed = _start(directory, delay=0.0)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()[-2000:]
    tensors, card = _assert_finished_and_clean(directory)

    torch.set_num_threads(1)
    _child_module().run(tmp_path / "straight", STEPS, 0.0)
    _assert_same_run(tensors, card, tmp_path / "straight")


SLOW_MODEL = """
import os
import time

import pyro
import pyro.distributions as dist
import torch


def model(x, y=None):
    with pyro.plate("tasks", x.shape[0], dim=-2):
        w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[-1]), 1.0).to_event(1))
        with pyro.plate("data", x.shape[-2], dim=-1):
            return pyro.sample("y", dist.Normal((x * w).sum(-1), 0.5), obs=y)


def covariates(num_tasks, num_points, generator):
    time.sleep(float(os.environ.get("IAI_TEST_DELAY", "0")))  # draws no random numbers
    return (torch.randn(num_tasks, num_points, 2, generator=generator),)
"""


@pytest.mark.slow
def test_iai_train_killed_and_rerun_ends_as_an_uninterrupted_run(tmp_path):
    models = tmp_path / "slow_models.py"
    models.write_text(SLOW_MODEL)
    argv = ["train", f"{models}:model", "--covariates", f"{models}:covariates"]
    argv += ["--steps", str(STEPS), "--checkpoint-every", "1", "--tasks-per-step", "4"]
    argv += ["--min-points", "8", "--max-points", "16", "--batch-size", "8", "--seed", "3"]
    argv += ["--encoder", "deep_sets", "--no-progress"]
    directory = tmp_path / "run"
    command = ["-m", "iai_prob.cli", *argv, "--out", str(directory)]
    _kill_mid_run(_spawn(command, IAI_TEST_DELAY="0.3"), directory)

    resumed = _spawn(command)  # the same command, run again
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()[-2000:]
    tensors, card = _assert_finished_and_clean(directory)

    torch.set_num_threads(1)
    assert main([*argv, "--out", str(tmp_path / "straight")]) == 0
    _assert_same_run(tensors, card, tmp_path / "straight")
