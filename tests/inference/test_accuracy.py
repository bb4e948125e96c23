"""The central accuracy checks: KL to the exact posterior of Bayesian linear regression.

A guide is meta-trained once per worker (150 steps of 16 tasks with ``N ∈ [8, 64]``,
forward KL) and evaluated on held-out tasks, as ``KL(q_{λ_k} ‖ p(w | D))`` after each
refinement step.
"""

from __future__ import annotations

import itertools

import pyro
import pytest
import torch
from torch.distributions import kl_divergence

from iai_prob.inference import IterativeAmortizedGuide, fit
from iai_prob.inference.objectives import kl_to_exact
from iai_prob.models import LinearRegression

ENCODER_OPTIONS = {"embed_dim": 16, "hidden_dim": 32}
HELD_OUT_SEED = 2024


def _guide(family) -> IterativeAmortizedGuide:
    guide = IterativeAmortizedGuide(
        family, encoder="deep_sets", encoder_options=ENCODER_OPTIONS, batch_size=32
    )
    _, x, y = family.sample(2, 8, generator=torch.Generator().manual_seed(0))
    guide(x, y)  # build the refiner
    return guide


def held_out(family, num_tasks, num_points, seed=HELD_OUT_SEED):
    _, x, y = family.sample(num_tasks, num_points, generator=torch.Generator().manual_seed(seed))
    return x, y


def median_kl_per_step(guide, family, x, y) -> list[float]:
    """Median over tasks of ``KL(q_{λ_k} ‖ exact)`` for ``k = 0 … K``."""
    task = guide.prepare(x, y)
    exact = family.exact_posterior(x, y)
    return [
        float(kl_to_exact(entry.state, guide.refiner.family, task.layout, exact).median())
        for entry in guide.refinement_trace(x, y)
    ]


@pytest.fixture(scope="module")
def trained():
    """``(family, untrained guide, trained guide)``; built here with its own seeds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.set_rng_seed(7)
    family = LinearRegression(dim=2, noise_scale=0.5)
    untrained = _guide(family)
    pyro.set_rng_seed(7)
    guide = _guide(family)
    fit(
        guide,
        family,
        steps=150,
        tasks_per_step=16,
        num_points=(8, 64),
        objective="forward_kl",
        seed=1,
        progress=False,
    )
    torch.set_num_threads(threads)
    return family, untrained, guide


@pytest.mark.slow
@pytest.mark.parametrize("num_points", [16, 48])
def test_training_lowers_the_kl(trained, num_points):
    """(a) On held-out tasks of the training sizes, the KL of the initial state and the
    KL averaged over the refinement steps (what training minimizes) both go down."""
    family, untrained, guide = trained
    x, y = held_out(family, 32, num_points)
    before = median_kl_per_step(untrained, family, x, y)
    after = median_kl_per_step(guide, family, x, y)
    assert len(before) == len(after) >= 2
    assert after[0] < 0.8 * before[0]
    assert sum(after) / len(after) < sum(before) / len(before)
    assert after[-1] < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [HELD_OUT_SEED, HELD_OUT_SEED + 1])
def test_kl_decreases_over_one_pass(trained, seed):
    """(b) ``N = 256``, ``|B| = 32``: the median KL is non-increasing over the 8 steps of
    one pass (up to 5% + 0.005 nats) and ends below 0.05 nats."""
    family, _, guide = trained
    x, y = held_out(family, 32, 256, seed=seed)
    kls = median_kl_per_step(guide, family, x, y)
    assert len(kls) == 256 // 32 + 1
    for k, (previous, current) in enumerate(itertools.pairwise(kls)):
        assert current <= 1.05 * previous + 0.005, f"step {k + 1}: {kls}"
    assert kls[-1] < 0.05, kls
    assert kls[-1] < kls[0] / 100


@pytest.mark.slow
def test_one_pass_is_close_to_exact_far_beyond_the_training_sizes(trained):
    """(c) ``N = 4096`` (64 times the largest training ``N``): median KL < 0.1 after one pass."""
    family, _, guide = trained
    x, y = held_out(family, 16, 4096)
    kl = kl_divergence(guide.posterior(x, y), family.exact_posterior(x, y))
    assert kl.shape == (16,)
    assert float(kl.median()) < 0.1, kl


def test_default_update_is_exact_for_conjugate_models_at_any_size():
    """With the untrained (default) natural-gradient update, one pass over ``N = 4096``
    points in mini-batches of 32 averages the exact mini-batch targets."""
    family = LinearRegression(dim=2, noise_scale=0.5)
    guide = _guide(family)
    x, y = held_out(family, 4, 4096)
    kl = kl_divergence(guide.posterior(x, y), family.exact_posterior(x, y))
    assert float(kl.max()) < 0.01, kl
