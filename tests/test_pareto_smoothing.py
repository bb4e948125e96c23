"""PSIS on plain arrays: k̂ of heavy and light tails, and equal weights."""

import numpy as np

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
