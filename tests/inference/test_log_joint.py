"""``LogJoint`` against hand-written log joints (prior + scaled likelihood + log-Jacobian)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import biject_to, constraints

NUM_POINTS = 12
BATCH = torch.tensor([0, 3, 4, 7, 10])  # |B| = 5 of N = 12


def linear_regression_log_joint(family, z, x, y, scale):
    """``(S, T)``: ``log N(z; 0, s₀²I) + scale Σ_n log N(y_n; x_nᵀz, σ²)``; ``x (T, n, d)``."""
    prior = dist.Normal(0.0, family.prior_scale).log_prob(z).sum(-1)
    loc = torch.einsum("tnd,std->stn", x, z)
    likelihood = dist.Normal(loc, family.noise_scale).log_prob(y).sum(-1)
    return prior + scale * likelihood


def beta_bernoulli_log_joint(family, z, x, y, scale):
    """``(S, T)``: Beta prior on ``p = σ(z)``, its Jacobian ``p(1 − p)``, Bernoulli likelihood."""
    p = torch.sigmoid(z[..., 0])
    prior = dist.Beta(family.concentration1, family.concentration0).log_prob(p)
    log_jacobian = p.log() + (1 - p).log()
    likelihood = dist.Bernoulli(p.unsqueeze(-1)).log_prob(y).sum(-1)
    return prior + log_jacobian + scale * likelihood


HAND_WRITTEN = {
    "linear_regression": linear_regression_log_joint,
    "beta_bernoulli": beta_bernoulli_log_joint,
}


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("minibatch", [False, True], ids=["full", "minibatch"])
def test_per_particle_matches_hand_written(
    name, batched, minibatch, make_family, simulate, read_task
):
    family = make_family(name)
    _, x, y = simulate(family, 3, NUM_POINTS)
    args = (x, y) if batched else (x[0], y[0])
    layout, data, log_joint = read_task(family.model, *args)
    if minibatch:
        data = data.subset(BATCH)
        x, y = x[:, BATCH], y[:, BATCH]
    flat_tasks = 3 if batched else 1
    z = 0.7 * torch.randn(4, flat_tasks, layout.latent_dim)
    expected = HAND_WRITTEN[name](family, z, x[:flat_tasks], y[:flat_tasks], data.likelihood_scale)
    value = log_joint.per_particle(z, data)
    assert value.shape == (4, flat_tasks)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(log_joint(z, data), expected.sum(), rtol=1e-5, atol=1e-3)


def test_minibatch_likelihood_is_scaled_by_n_over_b(linreg, simulate, read_task):
    """``f_B − log prior = (N/|B|) Σ_B log lik``: the scale multiplies the likelihood only."""
    _, x, y = simulate(linreg, 2, NUM_POINTS)
    _, data, log_joint = read_task(linreg.model, x, y)
    batch = data.subset(BATCH)
    assert batch.likelihood_scale == pytest.approx(NUM_POINTS / len(BATCH))
    z = torch.randn(3, 2, 2)
    prior = dist.Normal(0.0, linreg.prior_scale).log_prob(z).sum(-1)
    unscaled = linear_regression_log_joint(linreg, z, x[:, BATCH], y[:, BATCH], 1.0) - prior
    scaled = log_joint.per_particle(z, batch) - prior
    torch.testing.assert_close(scaled, NUM_POINTS / len(BATCH) * unscaled, rtol=1e-5, atol=1e-4)


def _mixture_log_joint(family, z, y, scale=1.0):
    """``(S, T)``: the mixture's log joint with the assignments summed out by hand, the
    likelihood scaled by ``scale``."""
    stick = biject_to(constraints.simplex)
    weights = stick(z[..., :1])  # (S, T, K)
    locs = z[..., 1:].reshape(3, 2, 2, 2)  # (S, T, K, d)
    prior = (
        dist.Dirichlet(torch.full((2,), family.concentration)).log_prob(weights)
        + stick.log_abs_det_jacobian(z[..., :1], weights)
        + dist.Normal(0.0, family.prior_scale).log_prob(locs).sum((-1, -2))
    )
    # (S, T, N, K): log π_k + log N(y_n; μ_k, σ²I)
    component = dist.Normal(locs.unsqueeze(-3), family.noise_scale).log_prob(
        y.unsqueeze(-2).unsqueeze(0)
    )
    mixture = (weights.log().unsqueeze(-2) + component.sum(-1)).logsumexp(-1).sum(-1)
    return prior + scale * mixture


def _mixture_task(make_family, simulate, read_task):
    family = make_family("gaussian_mixture")
    _, x, y = simulate(family, 2, 6)
    layout, data, log_joint = read_task(family.model, x, y)
    assert log_joint.enumerate
    return family, y, data, log_joint, 0.5 * torch.randn(3, 2, layout.latent_dim)


def test_enumerated_mixture_marginalizes_assignments(make_family, simulate, read_task):
    """For the Gaussian mixture the log joint sums the assignments out exactly."""
    family, y, data, log_joint, z = _mixture_task(make_family, simulate, read_task)
    z.requires_grad_(True)
    value = log_joint(z, data)
    expected = _mixture_log_joint(family, z, y).sum()
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-3)
    (grad,) = torch.autograd.grad(value, z)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_enumerated_log_joint_without_gradients(make_family, simulate, read_task):
    family, y, data, log_joint, z = _mixture_task(make_family, simulate, read_task)
    with torch.no_grad():
        value = log_joint(z, data)
    expected = _mixture_log_joint(family, z, y).sum()
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("minibatch", [False, True], ids=["full", "minibatch"])
def test_enumerated_per_particle_matches_hand_written(minibatch, make_family, simulate, read_task):
    """Per particle and task ``(S, T)`` in one vectorized pass, with the gradient of each
    entry, on the full data and on a mini-batch scaled by ``N/|B|``."""
    family, y, data, log_joint, z = _mixture_task(make_family, simulate, read_task)
    scale = 1.0
    if minibatch:
        rows = torch.tensor([0, 2, 5])
        data, y, scale = data.subset(rows), y[:, rows], 6 / 3
        assert data.likelihood_scale == pytest.approx(scale)
    z.requires_grad_(True)
    value = log_joint.per_particle(z, data)
    expected = _mixture_log_joint(family, z, y, scale)
    assert value.shape == (3, 2)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-3)
    (grad,) = torch.autograd.grad(value[1, 0], z)
    (expected_grad,) = torch.autograd.grad(expected[1, 0], z)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-4)
    assert grad[0].abs().sum() == 0 and grad[1, 1].abs().sum() == 0  # only its own entry
    torch.testing.assert_close(log_joint.per_task_mean(z, data), expected.mean(0))


def test_particle_plate_moves_left_of_active_plates(linreg, simulate, read_task):
    """Inside an outer plate (e.g. psis_diagnostic's particles) the value is unchanged."""
    _, x, y = simulate(linreg, 1, NUM_POINTS)
    _, data, log_joint = read_task(linreg.model, x[0], y[0])
    z = torch.randn(4, 1, 2)
    outside = log_joint.per_particle(z, data)
    with pyro.plate("outer", 7, dim=-3):
        assert log_joint._particle_dim() == -4
        inside = log_joint.per_particle(z, data)
    torch.testing.assert_close(inside, outside)


def test_enumerated_per_task_values_do_not_depend_on_the_other_tasks():
    from pyro import poutine

    from iai_prob.inference.log_joint import LogJoint
    from iai_prob.inference.sites import discover_layout
    from iai_prob.inference.task_data import read_task_data
    from iai_prob.models import GaussianMixture

    family = GaussianMixture(dim=2, num_components=3)
    _, x, y = family.sample(3, 20, generator=torch.Generator().manual_seed(0))

    def per_task(xs, ys, z):
        trace = poutine.trace(family.model).get_trace(xs, ys)
        layout = discover_layout(trace)
        data = read_task_data(trace, (xs, ys), {}, data_plate="data", tasks_plate="tasks")
        return LogJoint(family.model, layout, "data", enumerate=True).per_task_mean(z, data)

    z = torch.randn(4, 3, 8)
    batched = per_task(x, y, z)
    alone = torch.cat([per_task(x[t : t + 1], y[t : t + 1], z[:, t : t + 1]) for t in range(3)])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-4)
    assert len(set(batched.tolist())) == 3  # three tasks, three different values
