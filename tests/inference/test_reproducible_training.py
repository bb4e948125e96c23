"""``fit`` is a function of its seed: every draw of a step comes from ``(seed, step)``.

Each test puts torch's global generator in a different state before each of two runs
with the same seed; the runs must still agree bit for bit, and ``fit`` must leave the
caller's global generator as it found it.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from iai_prob.inference import PriorPredictiveTasks, fit

TINY = {"tasks_per_step": 4, "num_points": (8, 16), "progress": False, "steps": 3}


def noisy_regression(x, y=None):
    """A regression whose likelihood applies dropout to ``x``: the log joint itself draws
    from torch's global generator (as a learned model with dropout does)."""
    num_tasks, num_points, dim = x.shape
    with pyro.plate("tasks", num_tasks, dim=-2):
        w = pyro.sample("w", dist.Normal(torch.zeros(dim), 1.0).to_event(1))
        with pyro.plate("data", num_points, dim=-1):
            mean = (F.dropout(x, p=0.3, training=True) * w).sum(-1)
            return pyro.sample("y", dist.Normal(mean, 0.5), obs=y)


def covariates(num_tasks, num_points, generator):
    return (torch.randn(num_tasks, num_points, 2, generator=generator),)


def _unbuilt_guide(make_guide, linreg):
    return make_guide(linreg), linreg  # its weights are drawn inside fit, from the seed


def _sampled_linearization(make_guide, linreg):
    torch.manual_seed(0)  # the same initial weights in both runs
    guide = make_guide(linreg, linearization="samples", num_particles=4)
    guide(*linreg.sample(1, 8, generator=torch.Generator().manual_seed(0))[1:])
    return guide, linreg


def _dropout_model(make_guide, linreg):
    return make_guide(noisy_regression), PriorPredictiveTasks(noisy_regression, covariates)


@pytest.mark.parametrize(
    "setup",
    [_unbuilt_guide, _sampled_linearization, _dropout_model],
    ids=["initial-weights", "sampled-linearization", "dropout-in-the-model"],
)
def test_the_same_seed_gives_the_same_run_bit_for_bit(setup, make_guide, linreg):
    runs = []
    for global_seed in (1, 2):
        guide, tasks = setup(make_guide, linreg)
        torch.manual_seed(global_seed)
        result = fit(guide, tasks, seed=7, **TINY)
        runs.append((result.losses, guide.refiner.state_dict()))
    (losses, weights), (again, weights_again) = runs
    assert losses == again
    assert weights.keys() == weights_again.keys()
    for name, value in weights.items():
        assert torch.equal(value, weights_again[name]), name


def test_another_seed_gives_another_run(make_guide, linreg):
    first = fit(make_guide(linreg), linreg, seed=7, **TINY)
    second = fit(make_guide(linreg), linreg, seed=8, **TINY)
    assert first.losses != second.losses


def test_fit_leaves_the_global_generator_alone(make_guide, linreg):
    torch.manual_seed(3)
    before = torch.get_rng_state()
    source = PriorPredictiveTasks(noisy_regression, covariates)
    fit(make_guide(noisy_regression), source, **TINY)
    assert torch.equal(torch.get_rng_state(), before)
