"""MAML- and Meta-SGD-style update rules: exact ELBO gradients, steps, training, checkpoints."""

from __future__ import annotations

import pytest
import torch

from iai_prob.inference import IterativeAmortizedGuide, fit
from iai_prob.inference.evaluation import held_out_kl
from iai_prob.inference.gradient_updates import (
    GradientStepUpdate,
    _to_log_tril,
    elbo_gradient,
    from_scale_tril,
)
from iai_prob.inference.posteriors import FullRankGaussian, get_posterior_family
from iai_prob.inference.signals import CurvatureSignal


def _random_spd(dim, generator):
    a = torch.randn(dim, dim, generator=generator)
    return a @ a.mT + dim * torch.eye(dim)


def test_elbo_gradient_matches_autograd_for_a_quadratic_log_joint():
    """f(z) = −½(z − m)ᵀA(z − m): E_q f + H(q) is closed-form in (μ, L)."""
    generator = torch.Generator().manual_seed(0)
    dim = 3
    curvature, target = _random_spd(dim, generator), torch.randn(dim, generator=generator)
    loc = torch.randn(dim, generator=generator, requires_grad=True)
    raw = torch.tril(torch.randn(dim, dim, generator=generator)) * 0.3
    raw.requires_grad_(True)
    tril = torch.tril(raw, -1) + torch.diag_embed(raw.diagonal().exp())
    delta = loc - target
    value = -0.5 * (delta @ curvature @ delta + torch.trace(curvature @ tril @ tril.mT))
    value = value + raw.diagonal().sum()  # entropy up to a constant: Σ log L_ii
    grad_loc, grad_raw = torch.autograd.grad(value, (loc, raw))
    signal = CurvatureSignal(
        grad=(-curvature @ delta).detach().unsqueeze(0),
        hessian=(-curvature).unsqueeze(0),
        log_joint=torch.zeros(1),
    )
    found_loc, found_tril = elbo_gradient(signal, tril.detach().unsqueeze(0))
    torch.testing.assert_close(found_loc[0], grad_loc)
    torch.testing.assert_close(found_tril[0], torch.tril(grad_raw))


@pytest.mark.parametrize("name", ["full_rank", "diagonal"])
def test_scale_tril_coordinates_round_trip(name):
    generator = torch.Generator().manual_seed(1)
    family = get_posterior_family(name, 3)
    precision = family.project(_random_spd(3, generator).expand(2, 3, 3))
    loc = torch.randn(2, 3, generator=generator)
    found_loc, found_precision = from_scale_tril(loc, _to_log_tril(precision), family)
    torch.testing.assert_close(found_loc, loc)
    torch.testing.assert_close(found_precision, precision, rtol=1e-4, atol=1e-4)


def test_only_meta_sgd_learns_step_sizes_and_bad_options_are_refused():
    family = FullRankGaussian(2)
    maml, meta_sgd = GradientStepUpdate(family, "maml"), GradientStepUpdate(family, "meta_sgd")
    assert {n for n, _ in maml.named_parameters()} == {"init_raw"}
    assert {n for n, _ in meta_sgd.named_parameters()} == {"init_raw", "log_lr_loc", "log_lr_tril"}
    torch.testing.assert_close(meta_sgd.step_sizes()[0], torch.full((2,), 0.1))
    with pytest.raises(ValueError, match="rule"):
        GradientStepUpdate(family, "adam")
    with pytest.raises(ValueError, match="inner_lr"):
        GradientStepUpdate(family, "maml", inner_lr=-1.0)
    with pytest.raises(ValueError, match="update"):
        IterativeAmortizedGuide(lambda x, y: None, update="sgd")


@pytest.mark.parametrize("update", ["maml", "meta_sgd"])
def test_untrained_gradient_steps_lower_the_kl(linreg, make_guide, update):
    """From the learned (here: initial, N(0, I)) state, plain ELBO steps approach p(w | D)."""
    guide = make_guide(linreg, update=update)
    guide(*linreg.sample(1, 8)[1:])
    kls = [
        float(held_out_kl(guide, linreg, 64, num_tasks=16, num_steps=k).median())
        for k in (0, 4, 16)
    ]
    assert kls[0] > kls[1] > kls[2]


def test_meta_sgd_training_lowers_the_held_out_kl_and_round_trips(linreg, make_guide, tmp_path):
    guide = make_guide(linreg, update="meta_sgd")
    guide(*linreg.sample(1, 8)[1:])
    before = float(held_out_kl(guide, linreg, 32, num_tasks=32, num_steps=2).median())
    result = fit(
        guide,
        linreg,
        steps=25,
        tasks_per_step=8,
        num_points=(16, 32),
        learning_rate=0.03,
        progress=False,
    )
    after = float(held_out_kl(guide, linreg, 32, num_tasks=32, num_steps=2).median())
    assert after < 0.7 * before, (before, after)
    assert not torch.allclose(guide.refiner.gradient_update.log_lr_loc, torch.tensor(0.1).log())
    assert len(result.losses) == 25
    guide.save(tmp_path / "meta_sgd")
    loaded = IterativeAmortizedGuide.load(tmp_path / "meta_sgd", linreg)
    loaded.convergence = guide.convergence  # a setting of the caller, not in the card
    x, y = linreg.sample(2, 20)[1:]
    torch.testing.assert_close(loaded.posterior(x, y).mean, guide.posterior(x, y).mean)


def test_fit_skips_diverging_refinements_and_stops_after_max_skipped(linreg, make_guide):
    guide = make_guide(linreg, update="maml", inner_lr=1e4)
    with pytest.raises(FloatingPointError, match="max_skipped"):
        fit(
            guide,
            linreg,
            steps=5,
            tasks_per_step=4,
            num_points=(32, 32),
            max_skipped=1,
            progress=False,
        )
