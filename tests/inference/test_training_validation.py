"""``fit`` scores the guide on held-out validation tasks, keeps the best, can stop early,
warns when training made the guide worse, and lets no Pyro NaN warning escape."""

from __future__ import annotations

import json
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from iai_prob.inference import IterativeAmortizedGuide, PriorPredictiveTasks, fit
from iai_prob.validation_history import ValidationHistory, validation_score, validation_sizes

TINY = {"tasks_per_step": 4, "num_points": (8, 24), "progress": False, "validation_tasks": 8}
HUGE_STEP = {"learning_rate": 5.0, "validate_every": 1}  # every step wrecks the guide


def _fresh_guide(make_guide, model):
    torch.manual_seed(0)  # the refiner's initial weights
    return make_guide(model)


def _built(make_guide, family):
    guide = _fresh_guide(make_guide, family)
    guide(*family.sample(1, 8, generator=torch.Generator().manual_seed(0))[1:])
    return guide


def _same_weights(first, second) -> bool:
    other = second.state_dict()
    return first.state_dict().keys() == other.keys() and all(
        torch.equal(value, other[name]) for name, value in first.state_dict().items()
    )


def test_the_untrained_score_is_recorded_and_a_frozen_guide_keeps_it(linreg, make_guide):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not worse than untrained: no warning
        result = fit(_built(make_guide, linreg), linreg, steps=2, learning_rate=0.0, **TINY)
    history = result.validation
    assert history.num_tasks == 8 and history.scores[0][0] == 0
    assert math.isfinite(history.untrained) and history.untrained > 0  # -ELBO per task
    assert history.final == (2, history.untrained)  # unchanged weights, the same held-out noise
    assert history.best_step == 0 and not result.stopped_early


def test_validation_off_records_nothing(linreg, make_guide):
    result = fit(_built(make_guide, linreg), linreg, steps=2, **{**TINY, "validation_tasks": 0})
    assert result.validation == ValidationHistory()


def test_validation_leaves_the_training_run_alone(linreg, make_guide):
    runs = []
    for tasks in (0, 8):
        guide = _built(make_guide, linreg)
        runs.append(
            fit(guide, linreg, steps=3, validate_every=1, **{**TINY, "validation_tasks": tasks})
        )
    assert runs[0].losses == runs[1].losses  # bit for bit: validation has its own seed


def test_a_run_that_gets_worse_keeps_the_best_weights_and_warns(linreg, make_guide):
    guide = _built(make_guide, linreg)
    with pytest.warns(UserWarning, match="worse than the untrained guide's") as caught:
        result = fit(guide, linreg, steps=3, **HUGE_STEP, **TINY)
    history = result.validation
    message = str(caught[0].message)
    assert "\n" not in message and f"{history.untrained:.4g}" in message
    assert history.final[1] > history.untrained and history.best_step == 0
    assert _same_weights(guide.refiner, _built(make_guide, linreg).refiner)  # untrained restored


def test_early_stopping_stops(linreg, make_guide):
    with pytest.warns(UserWarning, match="worse than the untrained"):
        result = fit(
            _built(make_guide, linreg), linreg, steps=20, early_stopping=2, **HUGE_STEP, **TINY
        )
    assert result.stopped_early and result.steps == 2 and len(result.losses) == 2
    assert [step for step, _ in result.validation.scores] == [0, 1, 2]


def test_resuming_keeps_the_best_and_reproduces_the_straight_run(linreg, make_guide, tmp_path):
    options = {**TINY, "learning_rate": 0.05, "validate_every": 2, "seed": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit(_built(make_guide, linreg), linreg, steps=3, checkpoint_dir=tmp_path, **options)
        resumed = _built(make_guide, linreg)
        result = fit(resumed, linreg, steps=6, checkpoint_dir=tmp_path, **options)
        straight = _built(make_guide, linreg)
        reference = fit(straight, linreg, steps=6, **options)
    assert result.losses == reference.losses and all(map(math.isfinite, result.losses))
    assert result.validation == reference.validation  # the step-3 end score chose nothing
    assert _same_weights(resumed.refiner, straight.refiner)
    # the folder's guide is the one fit returned, and says which step it is
    saved = IterativeAmortizedGuide.load(tmp_path / "guide", linreg)
    assert _same_weights(saved.refiner, resumed.refiner)
    card = json.loads((tmp_path / "guide.json").read_text())
    assert card["validation"]["step"] == result.validation.best_step
    assert card["validation"]["untrained"] == result.validation.untrained


def test_an_early_stopped_run_stays_stopped_when_resumed(linreg, make_guide, tmp_path):
    options = {**TINY, **HUGE_STEP, "early_stopping": 1, "checkpoint_dir": tmp_path}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first = fit(_built(make_guide, linreg), linreg, steps=10, **options)
        again = fit(_built(make_guide, linreg), linreg, steps=10, **options)
    assert first.stopped_early and again.stopped_early
    assert again.steps == first.steps == 1 and again.losses == first.losses


def overflowing_regression(x, y=None):
    """A regression whose likelihood overflows in float32 on data of 1e20: its variance
    and squared residuals are both inf, so ``log p(y | w)`` is NaN at every draw."""
    num_tasks, num_points, dim = x.shape
    with pyro.plate("tasks", num_tasks, dim=-2):
        w = pyro.sample("w", dist.Normal(torch.zeros(dim), 1.0).to_event(1))
        with pyro.plate("data", num_points, dim=-1):
            return pyro.sample("y", dist.Normal((x * w).sum(-1), 1e20), obs=y)


def test_no_pyro_nan_warning_escapes_fit(make_guide):
    """Pyro warned ``Encountered NaN: log_prob_sum at site 'y'`` at each of the 25 log-joint
    evaluations of this run before fit handled them: every step is skipped and counted,
    and the validation score is inf."""
    generator = torch.Generator().manual_seed(0)
    datasets = [
        (torch.randn(20, 2, generator=generator), 1e20 * (1 + torch.rand(20, generator=generator)))
        for _ in range(3)
    ]
    guide = _fresh_guide(make_guide, overflowing_regression)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(guide, datasets, steps=3, **{**TINY, "num_points": (8, 16)})
    assert [str(w.message) for w in caught] == []
    assert result.skipped == 3 and result.validation.scores == [(0, math.inf)]
    assert result.validation.final == (3, math.inf)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"validation_tasks": -1}, "validation_tasks must be a non-negative integer"),
        ({"validate_every": 0}, "validate_every must be a positive integer"),
        ({"early_stopping": 0}, "early_stopping must be a positive integer"),
        ({"early_stopping": 2, "validation_tasks": 0}, "early_stopping needs validation tasks"),
    ],
    ids=["negative-tasks", "zero-every", "zero-patience", "patience-without-tasks"],
)
def test_bad_validation_options_are_refused_before_any_work(options, message, linreg, make_guide):
    guide = make_guide(linreg)
    with pytest.raises(ValueError, match=message):
        fit(guide, linreg, steps=2, **{**TINY, **options})
    assert guide.refiner is None


# ---------------------------------------------------- the backend-neutral history
def test_the_validation_score_is_the_median_task_loss():
    assert validation_score([3.0, 1.0, 2.0]) == 2.0
    assert validation_score([4.0, 1.0, 3.0, 2.0]) == 2.0  # the lower middle one
    # a few tasks past float range or of a much larger scale do not decide it
    assert validation_score([1.0, 2.0, math.nan, math.inf, 1e11, 3.0, 2.5]) == 3.0
    assert validation_score([1.0, math.nan, math.inf]) == math.inf  # most not finite
    assert validation_score([]) == math.inf


def test_validation_sizes_spread_over_num_points():
    assert validation_sizes(64, 16, 256) == [(16, 16), (16, 96), (16, 176), (16, 256)]
    assert validation_sizes(6, 8, 24) == [(2, 8), (2, 13), (1, 19), (1, 24)]
    assert validation_sizes(3, 5, 5) == [(3, 5)]
    assert sum(t for t, _ in validation_sizes(5, 1, 100)) == 5


def test_history_keeps_the_earliest_best_and_counts_stale_validations():
    history = ValidationHistory()
    assert history.record(0, 5.0) and not history.record(1, 5.0)
    assert not history.record(2, float("nan")) and history.record(3, 4.0)
    assert history.scores[2] == (2, math.inf) and history.best == 4.0
    assert history.stale() == 0 and not history.should_stop(1)
    history.record(4, 6.0)
    assert history.should_stop(1) and not history.should_stop(2) and not history.should_stop(None)
    history.final = (5, 4.5)
    assert not history.final_is_best()
    assert "kept the best guide, from step 3" not in (history.worse_than_untrained() or "")
    history.final = (5, 7.0)
    assert "from step 3 (score 4)" in history.worse_than_untrained()
    assert ValidationHistory.from_card(json.loads(json.dumps(history.to_card()))) == history


def raw_count_negative_binomial(x, y=None):
    """randhie's negative binomial (benchmarks/real_models) on covariates of its size."""
    with pyro.plate("tasks", x.shape[0], dim=-2):
        a = pyro.sample("a", dist.Normal(0.0, 2.5))
        b = pyro.sample("b", dist.Normal(0.0, 0.5).expand([x.shape[-1]]).to_event(1))
        mean = torch.exp(a + (x * b).sum(-1))
        concentration = pyro.sample("concentration", dist.HalfNormal(10.0))
        with pyro.plate("data", x.shape[-2], dim=-1):
            return pyro.sample("y", dist.GammaPoisson(concentration, concentration / mean), obs=y)


def test_tasks_with_a_finite_loss_and_a_non_finite_gradient_are_left_out():
    """On raw counts (means to e²⁰), the ELBO of some tasks is finite while its gradient is
    not (``concentration / rate`` once the rate underflows). Every step of this run was
    skipped, and every validation score was inf, before such tasks were left out of their
    step and the score became the median over tasks."""

    def covariates(num_tasks, num_points, generator):
        return (8.0 * torch.rand(num_tasks, num_points, 8, generator=generator),)

    guide = IterativeAmortizedGuide(raw_count_negative_binomial, family="full_rank")
    source = PriorPredictiveTasks(raw_count_negative_binomial, covariates)
    options = {**TINY, "tasks_per_step": 32, "num_points": (64, 128), "validation_tasks": 16}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # worse than untrained after 3 steps
        result = fit(guide, source, steps=3, **options)
    assert result.skipped == 0 and result.dropped_tasks > 0
    assert all(math.isfinite(score) for _, score in result.validation.scores)
