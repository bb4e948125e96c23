"""``mmd``: the unbiased RBF-kernel MMD² of Gretton et al. (2012)."""

from __future__ import annotations

import math

import pytest
import torch

from iai_prob.diagnostics.mmd import median_bandwidth, mmd


def _samples(shift: float, num_tasks: int = 8, points: int = 200, dim: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_tasks, points, dim, generator=generator)
    y = torch.randn(num_tasks, points, dim, generator=generator) + shift
    return x, y


def test_same_distribution_is_near_zero_and_a_shift_is_clearly_positive():
    same = mmd(*_samples(0.0))
    shifted = mmd(*_samples(1.0))
    assert same.shape == shifted.shape == (8,)
    # unbiased: centred on 0 when P = Q (individual values may be slightly negative)
    assert same.mean().abs() < 0.01 and same.abs().max() < 0.03
    assert (shifted > 0.1).all()
    assert (mmd(*_samples(2.0)) > shifted).all()  # grows with the shift


def test_matches_the_formula_written_out():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(4, 3, generator=generator, dtype=torch.float64) + 0.5
    h = 0.8

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * h**2))

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / (4 * 3)
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / (5 * 4)
    assert float(mmd(x, y, bandwidth=h)) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_median_bandwidth_is_the_median_pairwise_distance():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[3.0], [7.0]])
    # pooled distances: 1, 3, 7, 2, 6, 4 -> median of six values = (3 + 4) / 2
    assert float(median_bandwidth(x, y)) == pytest.approx(3.5)
    same = torch.zeros(3, 2)
    assert float(median_bandwidth(same, same)) == 1.0  # degenerate: falls back to 1


def test_bad_input_is_named():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="differ in dimension"):
        mmd(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="at least 2 points"):
        mmd(x, torch.randn(1, 2))
    with pytest.raises(ValueError, match="non-finite"):
        mmd(x, torch.full((4, 2), float("nan")))
    with pytest.raises(ValueError, match="batch shape"):
        mmd(torch.randn(3, 10, 2), torch.randn(2, 10, 2))
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        mmd(x, x, bandwidth=0.0)
