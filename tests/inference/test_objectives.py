"""Training objectives and ``kl_to_exact`` against closed forms and quadrature."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from iai_prob.inference.objectives import elbo, forward_kl, kl_to_exact, reverse_kl
from iai_prob.inference.posteriors import DiagonalGaussian, FullRankGaussian
from iai_prob.refinement_state import RefinementState


def _state(loc, covariance):
    return RefinementState(loc, torch.linalg.inv(covariance))


@pytest.fixture
def linear_task(linreg, simulate, read_task):
    _, x, y = simulate(linreg, 3, 20)
    layout, data, log_joint = read_task(linreg.model, x, y)
    return x, y, layout, data, log_joint


@pytest.mark.parametrize("family", [FullRankGaussian(2), DiagonalGaussian(2)], ids=["full", "diag"])
def test_monte_carlo_elbo_is_log_evidence_minus_kl(family, linreg, linear_task):
    x, y, _, data, log_joint = linear_task
    exact = linreg.exact_posterior(x, y)
    covariance = 1.5 * exact.covariance_matrix
    if family.name == "diagonal":
        covariance = torch.diag_embed(covariance.diagonal(dim1=-2, dim2=-1))
    state = _state(exact.mean + 0.05, covariance)
    q = MultivariateNormal(state.loc, precision_matrix=state.precision)
    expected = (linreg.log_evidence(x, y) - kl_divergence(q, exact)).sum()
    generator = torch.Generator().manual_seed(0)
    value = elbo(state, family, log_joint, data, num_samples=4000, generator=generator)
    assert value.dim() == 0
    torch.testing.assert_close(value, expected, atol=0.15, rtol=0)
    loss = reverse_kl(state, family, log_joint, data, num_samples=4000, generator=generator)
    torch.testing.assert_close(loss, -expected / 3, atol=0.05, rtol=0)


def test_elbo_is_differentiable_in_the_state(linreg, linear_task):
    _, _, _, data, log_joint = linear_task
    loc = torch.zeros(3, 2, requires_grad=True)
    value = elbo(
        RefinementState(loc, torch.eye(2).repeat(3, 1, 1)), FullRankGaussian(2), log_joint, data
    )
    (grad,) = torch.autograd.grad(value, loc)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_forward_kl_is_the_negative_log_density_of_the_truth():
    family = FullRankGaussian(2)
    state = _state(torch.zeros(3, 2), torch.eye(2).expand(3, 2, 2))
    truth = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    expected = -MultivariateNormal(torch.zeros(2), torch.eye(2)).log_prob(truth).mean()
    torch.testing.assert_close(forward_kl(state, family, truth), expected)


def test_analytic_kl_to_exact(linreg, linear_task):
    x, y, layout, _, _ = linear_task
    exact = linreg.exact_posterior(x, y)
    state = _state(exact.mean + 0.1, 2.0 * exact.covariance_matrix)
    q = MultivariateNormal(state.loc, precision_matrix=state.precision)
    kl = kl_to_exact(state, FullRankGaussian(2), layout, exact)
    assert kl.shape == (3,)
    torch.testing.assert_close(kl, kl_divergence(q, exact))
    exact_state = _state(exact.mean, exact.covariance_matrix)
    assert kl_to_exact(exact_state, FullRankGaussian(2), layout, exact).abs().max() < 1e-3


def test_monte_carlo_kl_to_exact_for_a_constrained_site(make_family, simulate, read_task):
    """``KL(q(z) ‖ p(z | D))`` with ``p(z) = Beta(σ(z)) σ'(z)``, checked by 1-D quadrature."""
    family = make_family("beta_bernoulli")
    _, x, y = simulate(family, 2, 15)
    layout, _, _ = read_task(family.model, x, y)
    exact = family.exact_posterior(x, y)
    state = _state(torch.tensor([[0.3], [-0.5]]), torch.tensor([[[0.4]], [[0.2]]]))
    kl = kl_to_exact(state, FullRankGaussian(1), layout, exact, num_samples=20000)
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    q = torch.distributions.Normal(state.loc.double(), state.precision[..., 0].double().rsqrt())
    log_q = q.log_prob(grid)  # (T, G)
    p = torch.sigmoid(grid)
    beta = exact.base_dist  # batch (T, 1)
    log_p = beta.log_prob(p[:, None, None])[..., 0].mT + p.log() + (1 - p).log()  # (T, G)
    reference = torch.trapezoid(log_q.exp() * (log_q - log_p), grid)
    torch.testing.assert_close(kl.double(), reference, atol=0.03, rtol=0)
