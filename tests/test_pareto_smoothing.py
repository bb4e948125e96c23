"""PSIS on plain arrays: k̂ of heavy and light tails, and equal weights."""

import numpy as np

from iai_prob import pareto_smoothing
from iai_prob.pareto_smoothing import pareto_smooth


def test_khat_separates_light_from_heavy_tails_and_equal_weights_are_uniform():
    rng = np.random.default_rng(0)
    light = rng.normal(scale=0.3, size=2000)
    heavy = np.log(rng.pareto(0.8, size=2000) + 1.0)  # weights with tail index 0.8: k̂ ≈ 1.25
    equal = np.full(2000, -750.0) + rng.normal(scale=1e-4, size=2000)  # q = p to float noise
    smoothed, khat = pareto_smooth(np.stack([light, heavy, equal], axis=1))
    assert khat[0] < 0.5 and khat[1] > 0.7 and khat[2] == 0.0
    np.testing.assert_allclose(np.exp(smoothed).sum(0), 1.0, rtol=1e-9)
    np.testing.assert_allclose(smoothed[:, 2], -np.log(2000))


def _mixed_tails(num_draws: int, rng) -> np.ndarray:
    """Columns of light, heavy and shifted heavy-tailed log weights, ``(S, 120)``."""
    columns = [rng.normal(scale=scale, size=(num_draws, 20)) for scale in (0.1, 1.0, 3.0)]
    columns += [np.log(rng.pareto(a, size=(num_draws, 20)) + 1.0) for a in (0.5, 1.0, 3.0)]
    return np.concatenate(columns, axis=1) - 800.0


def test_the_vectorized_fit_is_arviz_psislw_column_by_column():
    rng = np.random.default_rng(1)
    for num_draws in (30, 200, 1000, 4000):
        log_weights = _mixed_tails(num_draws, rng)
        expected_weights, expected_khat = pareto_smoothing._fit_arviz(log_weights)
        weights, khat, regular = pareto_smoothing._fit_columns(log_weights)
        assert regular.all()
        np.testing.assert_allclose(khat, expected_khat, rtol=0, atol=1e-12)
        np.testing.assert_allclose(weights, expected_weights, rtol=0, atol=1e-12)


def test_columns_the_vectorized_fit_cannot_take_go_through_arviz():
    rng = np.random.default_rng(2)
    log_weights = rng.normal(size=(1000, 4))
    log_weights[-200:, 0] = 5.0  # the largest weights tied
    log_weights[:, 1] = np.round(log_weights[:, 1], 1)  # ties inside the tail
    log_weights[:, 2] *= 2000.0  # the cutoff underflows once shifted
    regular = pareto_smoothing._fit_columns(log_weights)[2]
    assert regular.tolist() == [False, False, False, True]
    weights, khat = pareto_smooth(log_weights)
    expected_weights, expected_khat = pareto_smoothing._fit_arviz(log_weights)
    np.testing.assert_allclose(khat, expected_khat, rtol=0, atol=1e-12)
    np.testing.assert_allclose(weights, expected_weights, rtol=0, atol=1e-12)
