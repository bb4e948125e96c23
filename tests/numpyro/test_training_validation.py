"""Validation in JAX ``fit``: held-out tasks scored before, during and after training, the
best parameters kept (through a resume), early stopping, and a warning when training made
the guide worse than it started; the training losses are the same with it on or off."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

from iai_prob.models import LinearRegression
from iai_prob.numpyro import IterativeAmortizedGuide, fit
from iai_prob.numpyro.checkpoint import read_checkpoint
from iai_prob.numpyro.guide import load_guide

SMALL = {"encoder": "deep_sets", "encoder_options": {"embed_dim": 8, "hidden_dim": 16}}
# a learning rate that wrecks the guide in two steps: its held-out score becomes inf
WRECKED = {"tasks_per_step": 4, "num_points": (4, 8), "max_passes": 1, "learning_rate": 10.0}
WRECKED |= {"progress": False}


def _guide_and_params(family):
    guide = IterativeAmortizedGuide(family, batch_size=8, **SMALL)
    _, x, y = family.sample(jax.random.PRNGKey(0), 1, 8)
    return guide, guide.init_params(x[0], y[0])


def _leaves(params):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(params)]


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b), strict=True))


@pytest.mark.slow  # three compilations of the training step
@pytest.mark.heavy  # 42 s of one CI worker: `make test-all` runs it
def test_a_wrecked_run_keeps_the_untrained_guide_through_a_resume_and_warns(tmp_path):
    family = LinearRegression(dim=2).on("numpyro")
    guide, start = _guide_and_params(family)
    plain = fit(guide, family, steps=4, params=start, validation_tasks=0, **WRECKED)
    assert plain.validation.scores == [] and not _same(plain.params, start)

    options = {"validation_tasks": 8, "validate_every": 2, "checkpoint_dir": tmp_path}
    with pytest.warns(UserWarning, match="after 2 steps the guide scores"):
        first = fit(guide, family, steps=2, params=start, checkpoint_every=1, **options, **WRECKED)
    untrained = first.validation.untrained
    assert first.validation.scores[0] == (0, untrained) and np.isfinite(untrained)
    with pytest.warns(UserWarning, match="worse than the untrained guide's .*kept the untrained"):
        # the untrained parameters survive only in the training state's best.*: resumed,
        # early stopping after 2 validations without a new best ends it at step 4 of 6
        resumed = fit(guide, family, steps=6, early_stopping=2, **options, **WRECKED)
    # validation draws from its own key: the training losses are those without it
    np.testing.assert_array_equal(resumed.losses, plain.losses)  # NaN where both skipped
    history = resumed.validation
    assert [step for step, _ in history.scores] == [0, 2, 4] and history.num_tasks == 8
    assert history.scores[0][1] == untrained and history.best_step == 0
    assert history.final == (4, history.scores[-1][1]) and history.final[1] > untrained
    assert resumed.stopped_early and resumed.steps == 4
    assert _same(resumed.params, start)
    # the folder's guide is the best one, and its card says which
    _, saved = load_guide(tmp_path / "guide", family)
    assert _same(saved, start)
    _, card = read_checkpoint(tmp_path / "guide")
    assert card["validation"] == {"step": 0, "score": untrained, "untrained": untrained, "tasks": 8}


def test_validation_scores_the_untrained_guide_and_keeps_the_last_when_best():
    family = LinearRegression(dim=2).on("numpyro")
    guide, start = _guide_and_params(family)
    options = {**WRECKED, "learning_rate": 1e-3, "objective": "mixed"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit(guide, family, steps=3, params=start, validate_every=2, **options)
    history = result.validation
    assert history.num_tasks == 64 and [step for step, _ in history.scores] == [0, 2]
    assert all(np.isfinite(score) for _, score in history.scores)
    # scored at the end too; a guide that improved returns its last parameters, silently
    assert history.final[0] == 3 and history.final[1] < history.untrained
    assert history.final_is_best() and not _same(result.params, start)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"validation_tasks": -1}, "validation_tasks must be a non-negative integer"),
        ({"validation_tasks": 2.5}, "validation_tasks must be a non-negative integer"),
        ({"validate_every": 0}, "validate_every must be a positive integer, got 0"),
        ({"early_stopping": 0}, "early_stopping must be a positive integer, got 0"),
        ({"early_stopping": 3, "validation_tasks": 0}, "early_stopping needs validation tasks"),
    ],
)
def test_bad_validation_options_are_refused_before_any_work(options, message, tmp_path):
    family = LinearRegression(dim=2).on("numpyro")
    guide = IterativeAmortizedGuide(family, batch_size=8, **SMALL)
    with pytest.raises(ValueError, match=message):
        fit(guide, family, checkpoint_dir=tmp_path / "run", progress=False, **options)
    assert not (tmp_path / "run").exists() and guide._static is None
