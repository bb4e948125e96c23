"""PSIS k̂ and importance resampling against exact posteriors of linear regression."""

import numpy as np
import pytest
import torch

from iai_prob.diagnostics import (
    ImportanceSamplingError,
    approximate_posterior,
    importance_resample,
    khat_threshold,
    psis_khat,
    to_inference_data,
)
from tests.diagnostics.conftest import shrunk


def _batch(family, num_tasks=24, num_points=30):
    _, x, y = family.sample(num_tasks, num_points, generator=torch.Generator().manual_seed(11))
    return x, y


def test_overconfident_posterior_has_high_khat(family):
    x, y = _batch(family)
    draws = approximate_posterior(shrunk(family, 0.4), family, x, y).draw(1000, seed=1)
    khat = psis_khat(draws)
    assert khat.shape == (24,)
    # log w = const + 0.42 χ²_3 has a Pareto tail of shape 0.84
    assert np.median(khat) > 0.7


def test_overdispersed_posterior_has_low_khat(family):
    x, y = _batch(family)
    draws = approximate_posterior(shrunk(family, 1.3), family, x, y).draw(1000, seed=1)
    assert np.median(psis_khat(draws)) < 0.5


def test_khat_input_forms_agree(family, dataset):
    _, x, y = dataset
    source = approximate_posterior(shrunk(family, 0.6), family, x, y)
    draws = source.draw(500, seed=2)
    from_draws = psis_khat(draws)
    from_vector = psis_khat(draws.log_weights[:, 0])
    assert isinstance(from_vector, float)
    assert from_draws.shape == (1,)
    assert from_vector == pytest.approx(float(from_draws[0]))
    idata = to_inference_data(source, num_samples=500, seed=2)
    assert psis_khat(idata) == pytest.approx(from_vector)


def test_resampling_moves_q_toward_the_posterior(family, dataset):
    _, x, y = dataset
    exact = family.exact_posterior(x, y)
    sd = exact.variance.sqrt()

    def biased(x, y):
        return torch.distributions.MultivariateNormal(
            exact.loc + 0.5 * sd, scale_tril=1.4 * exact.scale_tril
        )

    draws = approximate_posterior(biased, family, x, y).draw(4000, seed=3)
    resampled = importance_resample(draws, num_samples=4000, seed=4)
    assert resampled.z.shape == (4000, 1, 3)
    before = ((draws.z[:, 0].mean(0) - exact.loc) / sd).abs().max()
    after = ((resampled.z[:, 0].mean(0) - exact.loc) / sd).abs().max()
    assert before > 0.45
    assert after < 0.12
    ratio = resampled.z[:, 0].std(0) / sd
    assert ((ratio > 0.85) & (ratio < 1.15)).all()


def test_resampling_refuses_heavy_tails(family):
    x, y = _batch(family, num_tasks=4)
    draws = approximate_posterior(shrunk(family, 0.3), family, x, y).draw(1000, seed=5)
    with pytest.raises(ImportanceSamplingError, match=r"k̂ ≥ 0\.7"):
        importance_resample(draws)


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="S ≥ 10"):
        psis_khat(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        psis_khat(np.array([0.0] * 20 + [np.nan]))
    with pytest.raises(ValueError, match="PosteriorDraws"):
        importance_resample(np.zeros((100, 2)))
    assert khat_threshold(1000) == pytest.approx(2 / 3)
    assert khat_threshold(10**8) == 0.7
