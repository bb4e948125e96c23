"""A training folder is one run: ``fit`` resumes only the same run, says what differs
otherwise, starts again on ``resume=False``, and two processes never share a folder."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pyro import poutine

from iai_prob import checkpoint_format
from iai_prob.checkpoint_format import CheckpointError
from iai_prob.inference import fit
from iai_prob.inference.checkpoint import read_checkpoint, write_checkpoint
from iai_prob.inference.sources import NormalCovariates, PriorPredictiveTasks
from iai_prob.models import LinearRegression
from iai_prob.training_folder import (
    LOCK_NAME,
    FolderInUseError,
    RunMismatchError,
    callable_identity,
    check_same_run,
    lock_folder,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = {"tasks_per_step": 4, "num_points": (8, 16), "progress": False}


def _step(folder) -> int:
    return json.loads((folder / "last.json").read_text())["step"]


@pytest.fixture
def trained(make_guide, linreg, tmp_path):
    """A folder holding 2 steps of a run with the default settings."""
    fit(make_guide(linreg), linreg, steps=2, checkpoint_dir=tmp_path, **TINY)
    return tmp_path


@pytest.mark.parametrize(
    ("guide_options", "fit_options", "message"),
    [
        ({}, {"seed": 1}, "holds a run with seed 0, not 1;"),
        ({}, {"objective": "forward_kl"}, "objective 'reverse_kl', not 'forward_kl'"),
        ({}, {"tasks_per_step": 2}, "tasks per step 4, not 2"),
        ({}, {"num_points": (8, 32)}, "points per task [8, 16], not [8, 32]"),
        ({}, {"learning_rate": 0.01}, "learning rate 0.001, not 0.01"),
        ({"family": "diagonal"}, {}, "posterior family 'full_rank', not 'diagonal'"),
        ({"encoder": "set_transformer", "encoder_options": {}}, {}, "encoder 'deep_sets', not"),
        ({"batch_size": 8}, {}, "batch size 16, not 8"),
        ({}, {"optimizer": "sgd"}, "optimizer 'Adam', not 'SGD'"),
    ],
    ids=["seed", "objective", "tasks", "points", "lr", "posterior", "encoder", "batch", "optim"],
)
def test_another_run_is_refused_by_name(
    guide_options, fit_options, message, trained, make_guide, linreg
):
    guide = make_guide(linreg, **guide_options)
    if fit_options.get("optimizer") == "sgd":
        guide(*linreg.sample(1, 8, generator=torch.Generator().manual_seed(0))[1:])
        fit_options = {"optimizer": torch.optim.SGD(guide.refiner.parameters(), lr=1e-3)}
    options = {**TINY, **fit_options}
    with pytest.raises(RunMismatchError, match="resume=False to start again") as error:
        fit(guide, linreg, steps=4, checkpoint_dir=trained, **options)
    assert message in str(error.value)
    assert isinstance(error.value, ValueError) and isinstance(error.value, CheckpointError)
    assert len(str(error.value).splitlines()) == 1
    assert _step(trained) == 2  # the folder's run is untouched


def test_another_model_is_refused_before_its_weights_are_read(trained, make_guide):
    other = LinearRegression(dim=3, noise_scale=0.5)
    with pytest.raises(RunMismatchError) as error:
        fit(make_guide(other), other, steps=4, checkpoint_dir=trained, **TINY)
    assert error.value.description == (
        "holds a run with model linear_regression(dim=2, noise_scale=0.5, prior_scale=1.0), "
        "not linear_regression(dim=3, noise_scale=0.5, prior_scale=1.0)"
    )


def test_the_same_run_resumes(trained, make_guide, linreg):
    result = fit(make_guide(linreg), linreg, steps=3, checkpoint_dir=trained, **TINY)
    assert result.steps == 3 and len(result.losses) == 3 and _step(trained) == 3


def test_resume_false_starts_again_and_replaces_the_old_run(trained, make_guide, linreg):
    result = fit(
        make_guide(linreg), linreg, steps=1, checkpoint_dir=trained, resume=False, seed=4, **TINY
    )
    assert result.steps == 1
    _, card = read_checkpoint(trained / "last")
    assert card["step"] == 1 and card["run"]["seed"] == 4
    # the new run is the folder's run now
    fit(make_guide(linreg), linreg, steps=2, checkpoint_dir=trained, seed=4, **TINY)
    assert _step(trained) == 2


def test_a_guide_without_training_state_is_not_overwritten(trained, make_guide, linreg):
    for path in trained.glob("last.*"):
        path.unlink()
    with pytest.raises(RunMismatchError, match=r"holds a guide but no training state"):
        fit(make_guide(linreg), linreg, steps=2, checkpoint_dir=trained, **TINY)


def _as_written_before_run_identities(folder):
    """Rewrite the folder's training state as earlier versions wrote it (no ``run``)."""
    tensors, card = read_checkpoint(folder / "last")
    del card["run"]
    for key in ("format", "schema_version", "sha256", "card_sha256", "weights_file"):
        card.pop(key, None)
    write_checkpoint(folder / "last", tensors, card, versioned=True)


def test_a_training_state_of_an_earlier_version_is_checked_by_its_budget(
    trained, make_guide, linreg
):
    _as_written_before_run_identities(trained)
    with pytest.raises(RunMismatchError, match="seed 0, not 5"):
        fit(make_guide(linreg), linreg, steps=3, checkpoint_dir=trained, seed=5, **TINY)
    other = LinearRegression(dim=3, noise_scale=0.5)
    with pytest.raises(RunMismatchError, match=r"holds a run with weight \S+ of shape \[") as e:
        fit(make_guide(other), other, steps=3, checkpoint_dir=trained, **TINY)
    assert len(str(e.value).splitlines()) == 1  # not the state dict's traceback
    fit(make_guide(linreg), linreg, steps=3, checkpoint_dir=trained, **TINY)
    assert _step(trained) == 3


def test_a_folder_in_use_is_refused(tmp_path, make_guide, linreg):
    guide = make_guide(linreg)
    with lock_folder(tmp_path), pytest.raises(FolderInUseError) as error:
        fit(guide, linreg, steps=1, checkpoint_dir=tmp_path, **TINY)
    assert f"is in use by another training process (pid {os.getpid()})" in str(error.value)
    assert isinstance(error.value, ValueError)
    assert guide.refiner is None  # refused before any work
    fit(guide, linreg, steps=1, checkpoint_dir=tmp_path, **TINY)  # released with the block


def test_a_killed_process_leaves_no_lock_behind(tmp_path):
    code = (
        "import sys, time; from iai_prob.training_folder import lock_folder\n"
        "with lock_folder(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout.readline() == b"locked\n"
        with pytest.raises(FolderInUseError, match=f"pid {process.pid}"), lock_folder(tmp_path):
            pass
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    with lock_folder(tmp_path):
        pass
    assert (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_a_folder_that_cannot_be_one_is_refused_before_any_work(where, tmp_path, make_guide):
    (tmp_path / "taken").write_text("")
    folder = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "run"
    linreg = LinearRegression(dim=2)
    guide = make_guide(linreg)
    with pytest.raises(ValueError, match="taken is a file"):
        fit(guide, linreg, steps=1, checkpoint_dir=folder, **TINY)
    assert guide.refiner is None


def test_each_versioned_write_stages_under_its_own_name(tmp_path, monkeypatch):
    staged = []
    original = checkpoint_format.atomic_write

    def spy(path, write):
        staged.append(path.name)
        return original(path, write)

    monkeypatch.setattr(checkpoint_format, "atomic_write", spy)
    for value in (0.0, 1.0):
        write_checkpoint(tmp_path / "last", {"w": torch.full((2,), value)}, {}, versioned=True)
    names = [name for name in staged if name.endswith(".safetensors")]
    assert len(names) == 2 and names[0] != names[1]
    assert all(name.startswith("last.staged-") for name in names)
    remaining = sorted(path.name for path in tmp_path.iterdir())
    assert remaining == sorted(
        ["last.json", json.loads((tmp_path / "last.json").read_text())["weights_file"]]
    )


def _import_as(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_function_is_the_same_run_however_its_file_was_imported(tmp_path, monkeypatch):
    (tmp_path / "models.py").write_text(
        "def model(x, y=None):\n    pass\n\n\nclass Models:\n    def model(self, x, y=None):\n"
        "        pass\n"
    )
    monkeypatch.chdir(tmp_path)
    file = (tmp_path / "models.py").resolve()
    by_path = _import_as("_iai_user_models", "models.py")  # as `iai train models.py:model`
    by_name = _import_as("models", file)  # as `iai train models:model`
    assert by_path.model is not by_name.model
    for model in (by_path.model, by_name.model, poutine.scale(by_name.model, scale=2.0)):
        assert callable_identity(model) == f"{file}:model"
    assert callable_identity(by_path.Models().model) == f"{file}:Models.model"
    assert callable_identity(len) == "builtins:len"  # no source file: module and name
    tasks = [
        PriorPredictiveTasks(module.model, NormalCovariates(3)) for module in (by_path, by_name)
    ]
    assert (
        tasks[0].identity()
        == tasks[1].identity()
        == {
            "prior_predictive": f"{file}:model",
            "covariates": {"x_dim": 3},
            "observed": "y",
            "data_plate": "data",
        }
    )


def test_normal_covariates_draw_what_they_say(tmp_path):
    (x,) = NormalCovariates(3)(4, 5, torch.Generator().manual_seed(0))
    assert x.shape == (4, 5, 3)
    with pytest.raises(ValueError, match="dim must be a positive integer, got 0"):
        NormalCovariates(0)


def test_another_prior_predictive_is_named_in_words(tmp_path):
    saved = {"tasks": {"prior_predictive": "/a/m.py:model", "covariates": {"x_dim": 2}}}
    requested = {
        "tasks": {
            "prior_predictive": "/a/m.py:model",
            "covariates": "/a/m.py:draw",
            "observed": "z",
        }
    }
    with pytest.raises(RunMismatchError) as error:
        check_same_run(tmp_path, saved, requested)
    assert error.value.description == (
        "holds a run with training tasks prior predictive of '/a/m.py:model' with covariates "
        "x ~ N(0, I_2), not prior predictive of '/a/m.py:model' with covariates '/a/m.py:draw', "
        "observed site 'z'"
    )
