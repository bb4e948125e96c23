"""Curvature signal, linearization points, CVI target and gradient preprocessing."""

from __future__ import annotations

import math

import pytest
import torch

from iai_prob.inference.posteriors import DiagonalGaussian, FullRankGaussian
from iai_prob.inference.signals import (
    CurvatureSignal,
    curvature_signal,
    linearization_points,
    natural_gradient_target,
    preprocess_gradient,
)

BATCH = torch.tensor([1, 4, 6, 11])  # |B| = 4 of N = 12


def linear_regression_derivatives(family, z, x, y, scale):
    """Gradient ``(S, T, D)`` and Hessian ``(T, D, D)`` of the scaled log joint."""
    residual = y - torch.einsum("tnd,std->stn", x, z)
    grad = (
        -z / family.prior_scale**2
        + scale * torch.einsum("tnd,stn->std", x, residual) / family.noise_scale**2
    )
    eye = torch.eye(z.shape[-1])
    hessian = -(eye / family.prior_scale**2 + scale * x.mT @ x / family.noise_scale**2)
    return grad, hessian.expand(z.shape[0], *hessian.shape)


def logistic_regression_derivatives(family, z, x, y, scale):
    probs = torch.sigmoid(torch.einsum("tnd,std->stn", x, z))
    grad = -z / family.prior_scale**2 + scale * torch.einsum("tnd,stn->std", x, y - probs)
    weights = probs * (1 - probs)  # (S, T, n)
    curvature = torch.einsum("tni,stn,tnj->stij", x, weights, x)
    eye = torch.eye(z.shape[-1])
    return grad, -(eye / family.prior_scale**2 + scale * curvature)


DERIVATIVES = {
    "linear_regression": linear_regression_derivatives,
    "logistic_regression": logistic_regression_derivatives,
}


def _random_precision(num_tasks, dim, seed=0):
    a = torch.randn(num_tasks, dim, dim, generator=torch.Generator().manual_seed(seed))
    return a @ a.mT + torch.eye(dim)


@pytest.mark.parametrize(
    ("name", "scheme"),
    [
        ("linear_regression", "sigma_points"),
        ("linear_regression", "mean"),
        ("linear_regression", "samples"),
        ("logistic_regression", "mean"),
    ],
)
def test_curvature_signal_is_the_exact_gradient_and_hessian(
    name, scheme, make_family, simulate, read_task
):
    """At the mean (or averaged over a Gaussian, for the quadratic linear-regression log
    joint) the signal is ``∇f_B`` and ``∇²f_B`` of the ``N/|B|``-scaled mini-batch log joint."""
    family = make_family(name)
    _, x, y = simulate(family, 3, 12)
    _, data, log_joint = read_task(family.model, x, y)
    batch = data.subset(BATCH)
    loc, precision = torch.randn(3, 2), _random_precision(3, 2)
    with torch.no_grad():  # as inside Predictive: the signal must still be computed
        signal = curvature_signal(log_joint, loc, precision, batch, scheme)
    grad, hessian = DERIVATIVES[name](family, loc.unsqueeze(0), x[:, BATCH], y[:, BATCH], 3.0)
    torch.testing.assert_close(signal.hessian, hessian[0], rtol=1e-4, atol=1e-3)
    if scheme != "samples":  # E_q ∇f = ∇f(μ) for a linear gradient; at μ for "mean"
        torch.testing.assert_close(signal.grad, grad[0], rtol=1e-4, atol=1e-3)
        points = linearization_points(loc, precision, scheme)
        expected = log_joint.per_particle(points, batch).detach().mean(0)
        torch.testing.assert_close(signal.log_joint.sum(), expected.sum(), rtol=1e-5, atol=1e-3)
    assert not signal.grad.requires_grad and not signal.hessian.requires_grad


def test_sigma_points_match_mean_and_covariance():
    loc = torch.randn(3, 4)
    a = torch.randn(3, 4, 4)
    precision = a @ a.mT + torch.eye(4)
    points = linearization_points(loc, precision, "sigma_points")
    assert points.shape == (8, 3, 4)
    torch.testing.assert_close(points.mean(0), loc, atol=1e-5, rtol=1e-5)
    centred = points - loc
    covariance = torch.einsum("stI,stJ->tIJ", centred, centred) / 8
    torch.testing.assert_close(covariance, torch.linalg.inv(precision), atol=1e-4, rtol=1e-4)


def test_other_linearizations():
    loc, precision = torch.randn(3, 2), torch.eye(2).expand(3, 2, 2)
    torch.testing.assert_close(linearization_points(loc, precision, "mean"), loc.unsqueeze(0))
    assert linearization_points(loc, precision, "samples", num_particles=6).shape == (6, 3, 2)
    with pytest.raises(ValueError, match="'bogus'"):
        linearization_points(loc, precision, "bogus")


def test_natural_gradient_target_with_the_whole_dataset_is_the_exact_posterior(
    linreg, simulate, read_task
):
    _, x, y = simulate(linreg, 3, 20)
    _, data, log_joint = read_task(linreg.model, x, y)
    exact = linreg.exact_posterior(x, y)
    loc = 2.0 * torch.randn(3, 2)  # any linearization point: f is quadratic
    signal = curvature_signal(log_joint, loc, _random_precision(3, 2), data, "sigma_points")
    linear, precision = natural_gradient_target(signal, loc, FullRankGaussian(2))
    torch.testing.assert_close(precision, exact.precision_matrix, rtol=1e-4, atol=1e-3)
    mean = torch.linalg.solve(precision, linear.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(mean, exact.mean, rtol=1e-4, atol=1e-4)


def test_diagonal_target_has_the_mean_field_optimum_as_fixed_point(linreg, simulate, read_task):
    _, x, y = simulate(linreg, 2, 20)
    _, data, log_joint = read_task(linreg.model, x, y)
    exact = linreg.exact_posterior(x, y)
    signal = curvature_signal(log_joint, exact.mean, exact.precision_matrix, data, "mean")
    linear, precision = natural_gradient_target(signal, exact.mean, DiagonalGaussian(2))
    torch.testing.assert_close(
        precision, torch.diag_embed(exact.precision_matrix.diagonal(0, -2, -1))
    )
    torch.testing.assert_close(
        linear / precision.diagonal(0, -2, -1), exact.mean, rtol=1e-4, atol=1e-4
    )


def test_non_concave_curvature_is_taken_by_magnitude():
    hessian = torch.diag(torch.tensor([3.0, -2.0, -1e-4]))[None]  # one convex direction
    signal = CurvatureSignal(torch.zeros(1, 3), hessian, None)
    _, precision = natural_gradient_target(signal, torch.zeros(1, 3), FullRankGaussian(3), 0.01)
    torch.testing.assert_close(precision[0], torch.diag(torch.tensor([3.0, 2.0, 0.01])))


def test_preprocess_gradient_formula():
    p = 10.0
    small = 1e-6  # below e^{-10}
    grad = torch.tensor([1.0, -math.exp(-5.0), small, 0.0, -2.0])
    expected = torch.tensor(
        [
            [0.0, 1.0],
            [-0.5, -1.0],
            [-1.0, math.exp(p) * small],
            [-1.0, 0.0],
            [math.log(2.0) / p, -1.0],
        ]
    )
    torch.testing.assert_close(preprocess_gradient(grad, p), expected)
    assert preprocess_gradient(torch.randn(3, 4)).shape == (3, 4, 2)
