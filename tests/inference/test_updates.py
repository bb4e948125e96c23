"""Natural-parameter combination, the learned step size and the gradient-free target."""

from __future__ import annotations

import math

import pytest
import torch

from iai_prob.inference.posteriors import FullRankGaussian
from iai_prob.inference.updates import (
    LearnedSiteTarget,
    NaturalGradientUpdate,
    combine_natural,
    step_context,
)


def random_state(num_tasks=3, dim=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(num_tasks, dim, dim, generator=generator)
    return torch.randn(num_tasks, dim, generator=generator), a @ a.mT + 0.5 * torch.eye(dim)


def linear_term(loc, precision):
    return (precision @ loc.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("rho", [0.0, 0.3, 1.0])
def test_combine_natural_is_a_convex_combination(rho):
    loc, precision = random_state(seed=1)
    target_loc, target_precision = random_state(seed=2)
    target_linear = linear_term(target_loc, target_precision)
    new_loc, new_precision = combine_natural(
        loc, precision, target_linear, target_precision, torch.full((3,), rho)
    )
    torch.testing.assert_close(new_precision, (1 - rho) * precision + rho * target_precision)
    torch.testing.assert_close(
        linear_term(new_loc, new_precision),
        (1 - rho) * linear_term(loc, precision) + rho * target_linear,
        rtol=1e-4,
        atol=1e-4,
    )
    assert (torch.linalg.eigvalsh(new_precision) > 0).all()
    if rho == 1.0:
        torch.testing.assert_close(new_loc, target_loc, rtol=1e-4, atol=1e-4)
    if rho == 0.0:
        torch.testing.assert_close(new_loc, loc, rtol=1e-4, atol=1e-4)


def test_combine_natural_per_task_step_sizes():
    loc, precision = random_state(seed=3)
    target_loc, target_precision = random_state(seed=4)
    new_loc, _ = combine_natural(
        loc,
        precision,
        linear_term(target_loc, target_precision),
        target_precision,
        torch.tensor([0.0, 1.0, 0.0]),
    )
    torch.testing.assert_close(new_loc[1], target_loc[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(new_loc[[0, 2]], loc[[0, 2]], rtol=1e-4, atol=1e-4)


def test_combine_natural_flags_a_non_positive_definite_result_with_nan():
    loc, precision = random_state(seed=5)
    bad = -torch.eye(2).expand(3, 2, 2)
    new_loc, _ = combine_natural(loc, precision, torch.zeros(3, 2), bad, torch.ones(3))
    assert torch.isnan(new_loc).all()


@pytest.mark.parametrize("weight", [1.0, 0.5, 0.01])
@pytest.mark.parametrize(("points_seen", "batch"), [(0, 32), (32, 32), (96, 32), (50, 7)])
def test_default_step_size_is_robbins_monro(points_seen, batch, weight):
    """With ``δ = 0``: ``ρ = |B| / (n + |B| + w|B|)`` whatever the context."""
    update = NaturalGradientUpdate(context_dim=5)
    with torch.no_grad():
        update.log_init_weight.fill_(math.log(weight))
    rho = update.step_size(points_seen, batch, torch.randn(4, 5))
    expected = batch / (points_seen + batch + weight * batch)
    torch.testing.assert_close(rho, torch.full((4,), expected))


def test_step_context_features():
    loc, precision = random_state(seed=6)
    target_loc, target_precision = random_state(seed=7)
    context = step_context(
        3, 1024, 32, loc, precision, linear_term(target_loc, target_precision), target_precision
    )
    assert context.shape == (3, 5)
    assert torch.isfinite(context).all()
    scale = math.log(1024.0)
    torch.testing.assert_close(
        context[:, :3], torch.tensor([math.log(4) / scale, 1.0, math.log(32) / scale]).expand(3, 3)
    )
    same = step_context(0, 8, 8, loc, precision, linear_term(loc, precision), precision)
    torch.testing.assert_close(same[:, 3:], torch.zeros(3, 2), atol=1e-5, rtol=0)


def test_learned_site_target_starts_at_prior_plus_scaled_unit_site():
    family = FullRankGaussian(2)
    target = LearnedSiteTarget(embed_dim=6, family=family)
    linear, precision = target(torch.randn(4, 6), likelihood_scale=3.0)
    torch.testing.assert_close(precision, 4.0 * torch.eye(2).expand(4, 2, 2))
    torch.testing.assert_close(linear, torch.zeros(4, 2))
