"""Numerical guards: ``fit`` skips and counts non-finite steps, stops past a threshold and
clips gradients; refinement reports a broken state instead of returning it."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from iai_prob.inference import PriorPredictiveTasks, RefinementError, fit
from iai_prob.inference import refinement as refinement_module
from iai_prob.inference import training as training_module

TINY = {"tasks_per_step": 4, "num_points": (8, 16), "progress": False}


def _fresh(make_guide, linreg):
    torch.manual_seed(0)
    guide = make_guide(linreg, batch_size=8)
    fit(guide, linreg, steps=1, learning_rate=0.0, **TINY)  # build it
    return guide


def _weights(guide):
    return {k: v.clone() for k, v in guide.refiner.state_dict().items()}


def _fail_on(monkeypatch, steps_to_break, how):
    """Make the loss of the listed (0-based) steps non-finite in the way ``how`` says."""
    calls = {"n": 0}
    original = training_module._step_loss

    def broken(guide, *args):
        step = calls["n"]
        calls["n"] += 1
        result = original(guide, *args)
        if step not in steps_to_break:
            return result
        if how == "loss":
            return result._replace(loss=result.loss * torch.nan)
        if how == "gradient":  # finite loss, NaN gradient of the weights (not of a state)
            parameter = next(guide.refiner.parameters())
            poisoned = torch.sqrt(parameter.flatten()[0] * 0.0)  # value 0, d/dp = inf·0 = NaN
            assert torch.isfinite(result.loss + poisoned)
            return result._replace(loss=result.loss + poisoned)
        raise RefinementError("injected: state not positive definite")

    monkeypatch.setattr(training_module, "_step_loss", broken)


@pytest.mark.parametrize("how", ["loss", "gradient", "refinement"])
def test_non_finite_steps_are_skipped_and_counted(how, monkeypatch, linreg, make_guide):
    guide = _fresh(make_guide, linreg)
    _fail_on(monkeypatch, {1, 2}, how)
    before = _weights(guide)
    result = fit(guide, linreg, steps=4, **TINY)
    assert result.steps == 4 and result.skipped == 2
    assert all(torch.isfinite(v).all() for v in guide.refiner.state_dict().values())
    assert any(not torch.equal(v, before[k]) for k, v in guide.refiner.state_dict().items())


def test_a_skipped_step_leaves_the_weights_alone(monkeypatch, linreg, make_guide):
    guide = _fresh(make_guide, linreg)
    _fail_on(monkeypatch, {0}, "gradient")
    before = _weights(guide)
    result = fit(guide, linreg, steps=1, **TINY)
    assert result.skipped == 1
    for name, value in guide.refiner.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_too_many_non_finite_steps_stop_training(monkeypatch, linreg, make_guide):
    guide = _fresh(make_guide, linreg)
    _fail_on(monkeypatch, set(range(10)), "loss")
    with pytest.raises(FloatingPointError, match=r"3 steps with a non-finite.*max_skipped=2"):
        fit(guide, linreg, steps=10, max_skipped=2, **TINY)


def test_gradients_are_clipped_to_clip_norm(linreg, make_guide):
    guide = _fresh(make_guide, linreg)
    before = _weights(guide)
    optimizer = torch.optim.SGD(guide.refiner.parameters(), lr=1.0)  # step = −clipped grad
    fit(guide, linreg, steps=1, optimizer=optimizer, clip_norm=1e-3, **TINY)
    moved = torch.cat([(v - before[k]).flatten() for k, v in guide.refiner.state_dict().items()])
    assert 0.0 < float(moved.norm()) <= 1e-3 * (1 + 1e-4)


def test_refinement_reports_a_broken_state_instead_of_returning_it(
    monkeypatch, linreg, make_guide, simulate
):
    guide = _fresh(make_guide, linreg)
    _, x, y = simulate(linreg, 1, 24)
    original = refinement_module.damped_combine

    def broken(*args, **kwargs):
        loc, precision, step_size = original(*args, **kwargs)
        return loc, -precision, step_size  # a negative-definite "precision"

    monkeypatch.setattr(refinement_module, "damped_combine", broken)
    with pytest.raises(RefinementError, match=r"refinement step 1.*not positive definite"):
        guide.posterior(x[0], y[0])


def test_a_task_with_non_finite_curvature_keeps_its_state_alone(
    monkeypatch, linreg, make_guide, simulate
):
    """A non-finite curvature signal for one task (e.g. a mixture weight at 0) leaves that
    task's state unchanged for the step; the other tasks refine as without it."""
    guide = _fresh(make_guide, linreg)
    _, x, y = simulate(linreg, 3, 24)

    def first_step(guide):
        task = guide.prepare(x, y)
        states = [state for state, _ in guide.trajectory(task, num_steps=1)]
        return states[0], states[1]

    with torch.no_grad():
        start, clean = first_step(guide)
        original = refinement_module.curvature_signal

        def poisoned(*args, **kwargs):
            signal = original(*args, **kwargs)
            hessian = signal.hessian.clone()
            hessian[1] = float("inf")
            return signal._replace(hessian=hessian)

        monkeypatch.setattr(refinement_module, "curvature_signal", poisoned)
        _, step = first_step(guide)
    torch.testing.assert_close(step.loc[1], start.loc[1])
    torch.testing.assert_close(step.precision[1], start.precision[1])
    assert not torch.allclose(clean.loc[1], start.loc[1])  # it would have moved
    for index in (0, 2):
        torch.testing.assert_close(step.loc[index], clean.loc[index])
        torch.testing.assert_close(step.precision[index], clean.precision[index])


def _counts(x, y=None):
    """Counts with a log link under a wide prior: torch.poisson returns -9.2e18 for rates
    past 1e19, outside the Poisson's support."""
    with pyro.plate("tasks", x.shape[0], dim=-2):
        w = pyro.sample("w", dist.Normal(0.0, 30.0))
        with pyro.plate("data", x.shape[1], dim=-1):
            return pyro.sample("y", dist.Poisson((w * x[..., 0]).exp()), obs=y)


def test_simulated_data_outside_the_likelihoods_support_are_skipped_and_counted(make_guide):
    tasks = PriorPredictiveTasks(
        _counts, lambda t, n, gen: (torch.rand(t, n, 1, generator=gen) + 1,)
    )
    guide = make_guide(_counts)
    result = fit(guide, tasks, steps=6, tasks_per_step=8, num_points=(8, 16), progress=False)
    assert result.skipped >= 1 and result.steps == 6


def _flagged(x, y=None):
    """A regression whose tasks with ``x[t, 0, 0] > 5`` have a log joint of ``−inf``
    everywhere (a factor), so their training loss is ``+inf`` whatever the state."""
    with pyro.plate("tasks", x.shape[0], dim=-2):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        pyro.factor("flag", torch.where(x[:, :1, 0] > 5.0, -torch.inf, 0.0))
        with pyro.plate("data", x.shape[1], dim=-1):
            return pyro.sample("y", dist.Normal(w * x[..., 0], 1.0), obs=y)


def _first_task_flagged(num_tasks, num_points, generator):
    x = torch.randn(num_tasks, num_points, 1, generator=generator)
    x[0, 0, 0] = 10.0
    return (x,)


def test_a_task_with_a_non_finite_loss_is_left_out_and_the_step_retaken(make_guide):
    """One task's infinite loss neither voids the step for the others (it is retaken on
    them) nor reaches the weights (0 · inf in a masked mean would make them NaN)."""
    tasks = PriorPredictiveTasks(_flagged, _first_task_flagged)
    guide = make_guide(_flagged)
    fit(guide, tasks, steps=1, learning_rate=0.0, validation_tasks=0, **TINY)  # build it
    before = _weights(guide)
    result = fit(guide, tasks, steps=3, validation_tasks=0, **TINY)
    assert result.skipped == 0 and result.dropped_tasks == 3  # task 0 of every step
    assert all(torch.isfinite(v).all() for v in guide.refiner.state_dict().values())
    assert any(not torch.equal(v, before[k]) for k, v in guide.refiner.state_dict().items())
    assert all(map(math.isfinite, result.losses))


def test_task_batch_keeps_the_selected_tasks_and_shared_arguments():
    from iai_prob.inference.sources import TaskBatch

    x, y, shared = torch.arange(6.0).reshape(3, 2), torch.arange(3.0), torch.tensor(7.0)
    batch = TaskBatch((x, y, shared, "label"), {"w": torch.arange(3.0)})
    kept = batch.tasks(torch.tensor([True, False, True]))
    assert kept.args[0].tolist() == [[0.0, 1.0], [4.0, 5.0]] and kept.args[1].tolist() == [0, 2]
    assert kept.args[2] is shared and kept.args[3] == "label"
    assert kept.theta["w"].tolist() == [0.0, 2.0]
    assert TaskBatch((x,), None).tasks(torch.tensor([True, True, False])).theta is None


def test_no_step_is_taken_to_an_invalid_candidate_from_a_state_whose_elbo_is_minus_inf():
    """From a state whose ELBO is ``−inf``, an invalid candidate (``−inf`` too: not
    positive definite) is not "no worse": the task keeps its state."""
    from iai_prob.inference.damping import backtracked_combine, damped_combine

    class MinusInf:
        def per_particle(self, z, batch=None):
            return torch.full(z.shape[:-1], -torch.inf, dtype=z.dtype)

    loc = torch.zeros(2, 2, dtype=torch.float64)
    precision = torch.eye(2, dtype=torch.float64).expand(2, 2, 2).clone()
    target = (
        torch.zeros(2, 2, dtype=torch.float64),
        -torch.eye(2, dtype=torch.float64).expand(2, 2, 2),
    )
    step = torch.full((2,), 1.0, dtype=torch.float64)
    base = torch.full((2,), -torch.inf, dtype=torch.float64)
    _, new_precision, used = damped_combine(
        loc, precision, step, [lambda: target], None, MinusInf(), base=base
    )
    assert (used == 0).all()
    torch.testing.assert_close(new_precision, precision)
    result = backtracked_combine(MinusInf(), loc, precision, step, target, base)
    assert not result.accepted.any()
    torch.testing.assert_close(result.precision, precision)
