"""``iai_prob.pretrained.train``: a recipe trains, measures and ships; nothing is lost."""

from __future__ import annotations

import json

import pytest

from iai_prob.inference import IterativeAmortizedGuide, training
from iai_prob.models import get_family
from iai_prob.pretrained import train as train_module

TINY = {
    "family": ("linear_regression", {"dim": 2, "noise_scale": 0.5, "prior_scale": 1.0}),
    "guide": {"family": "full_rank", "encoder": "deep_sets", "batch_size": 8},
    "fit": {"steps": 3, "tasks_per_step": 2, "num_points": (8, 16), "learning_rate": 1e-3},
    "evaluate": {"num_points": (16,)},
}


@pytest.fixture
def tiny_recipe(monkeypatch):
    monkeypatch.setitem(train_module.RECIPES, "tiny", TINY)


def _count_training_steps(monkeypatch) -> list:
    steps_trained = []
    step_loss = training._step_loss

    def counting_step_loss(*args, **kwargs):
        steps_trained.append(1)
        return step_loss(*args, **kwargs)

    monkeypatch.setattr(training, "_step_loss", counting_step_loss)
    return steps_trained


def test_a_recipe_ships_a_checkpoint_with_its_card(tiny_recipe, tmp_path, monkeypatch):
    steps_trained = _count_training_steps(monkeypatch)
    card = train_module.train("tiny", folder=tmp_path)
    assert len(steps_trained) == 3
    written = json.loads((tmp_path / "tiny.json").read_text())
    assert written["budget"]["steps"] == 3 and written["budget"]["seed"] == 0
    assert written["quality"] == card["quality"]
    assert card["quality"]["median_kl_to_exact"]["16"] >= 0
    assert not (tmp_path / ".tiny.training").exists()  # the training state is removed
    family = get_family("linear_regression", dim=2, noise_scale=0.5)
    IterativeAmortizedGuide.load(tmp_path / "tiny", family)  # loads for its family


def test_a_crash_after_training_keeps_the_training_and_a_rerun_resumes(
    tiny_recipe, tmp_path, monkeypatch
):
    def crash(*args, **kwargs):
        raise RuntimeError("evaluation crashed")

    monkeypatch.setattr(train_module, "evaluate_exact_kl", crash)
    with pytest.raises(RuntimeError, match="evaluation crashed"):
        train_module.train("tiny", folder=tmp_path)
    assert (tmp_path / ".tiny.training" / "last.json").exists()
    assert not (tmp_path / "tiny.json").exists()

    monkeypatch.undo()
    monkeypatch.setitem(train_module.RECIPES, "tiny", TINY)
    steps_trained = _count_training_steps(monkeypatch)
    card = train_module.train("tiny", folder=tmp_path)
    assert not steps_trained  # resumed at step 3 of 3: no step was trained twice
    assert card["quality"]["median_kl_to_exact"]["16"] >= 0
    assert (tmp_path / "tiny.json").exists() and not (tmp_path / ".tiny.training").exists()
