"""``linear_predictor``: ``x_nᵀ w`` for every layout the models meet."""

from __future__ import annotations

import pytest
import torch

from iai_prob.models.pyro_backend import linear_predictor


@pytest.mark.parametrize(
    "x_shape, w_shape, out_shape",
    [
        ((30, 4), (4,), (30,)),  # one dataset, one value of w
        ((30, 4), (5, 1, 4), (5, 30)),  # one dataset, 5 particles
        ((3, 30, 4), (3, 1, 4), (3, 30)),  # 3 tasks
        ((3, 30, 4), (5, 3, 1, 4), (5, 3, 30)),  # 5 particles × 3 tasks
    ],
)
def test_matches_the_broadcast_product(x_shape, w_shape, out_shape):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=generator)
    w = torch.randn(w_shape, generator=generator)
    found = linear_predictor(x, w)
    assert found.shape == out_shape
    assert found.stride(-1) == 1  # contiguous along the points, which likelihoods sum over
    torch.testing.assert_close(found, (x * w).sum(-1))


def test_promotes_dtypes_as_the_product_does():
    x = torch.randn(3, 30, 4, dtype=torch.float64)
    w = torch.randn(3, 1, 4)
    found = linear_predictor(x, w)
    assert found.dtype == torch.float64
    torch.testing.assert_close(found, (x * w).sum(-1))


def test_gradient_matches_the_broadcast_product():
    x = torch.randn(3, 30, 4)
    w = torch.randn(5, 3, 1, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(linear_predictor(x, w).square().sum(), w)
    (expected,) = torch.autograd.grad((x * w).sum(-1).square().sum(), w)
    torch.testing.assert_close(grad, expected)
