"""Comparison with NUTS: moments, C2ST, pair plots; the exact posterior agrees with NUTS."""

import numpy as np
import pytest
import torch

from iai_prob.diagnostics import c2st_accuracy, compare_with_nuts, pyro_nuts
from iai_prob.diagnostics.plots import plot_nuts_pairs
from iai_prob.models import LinearRegression
from tests.diagnostics.conftest import shrunk


@pytest.fixture(scope="module")
def small():
    """A 2-d linear regression task and Pyro NUTS draws of its posterior (run once)."""
    family = LinearRegression(dim=2, noise_scale=0.5)
    _, x, y = family.sample(1, 30, generator=torch.Generator().manual_seed(5))
    x, y = x[0], y[0]
    draws, seconds = pyro_nuts(family, x, y, num_warmup=100, num_samples=300, seed=1)
    return family, x, y, draws, seconds


def test_pyro_nuts_matches_the_exact_posterior(small):
    family, x, y, draws, seconds = small
    exact = family.exact_posterior(x, y)
    assert draws["w"].shape == (300, 2)
    assert seconds > 0
    error = (draws["w"].mean(0) - exact.loc.numpy()) / exact.variance.sqrt().numpy()
    assert np.abs(error).max() < 0.25


def test_exact_posterior_agrees_with_nuts(small):
    family, x, y, draws, _ = small
    result = compare_with_nuts(
        family.exact_posterior, family, x, y, num_samples=300, reference_draws=draws
    )
    assert list(result.table.index) == ["w[0]", "w[1]"]
    assert result.max_abs_std_diff < 0.25
    assert ((result.table["sd_ratio"] > 0.8) & (result.table["sd_ratio"] < 1.25)).all()
    assert result.c2st < 0.62
    figure = plot_nuts_pairs(result)
    assert len(figure.axes) == 4


def test_overconfident_posterior_disagrees_with_nuts(small):
    family, x, y, draws, _ = small
    result = compare_with_nuts(
        shrunk(family, 0.4), family, x, y, num_samples=300, reference_draws=draws
    )
    assert (result.table["sd_ratio"] < 0.55).all()
    assert result.c2st > 0.65


def test_compare_runs_nuts_itself(small):
    family, x, y, _, _ = small
    result = compare_with_nuts(
        family.exact_posterior, family, x, y, num_samples=40, num_warmup=20, c2st=False
    )
    assert result.c2st is None
    assert result.nuts_draws.shape == (40, 2)
    assert result.nuts_seconds > 0


def test_c2st_accuracy():
    generator = np.random.default_rng(0)
    same = c2st_accuracy(generator.normal(size=(200, 2)), generator.normal(size=(200, 2)))
    apart = c2st_accuracy(generator.normal(size=(200, 2)), 3 + generator.normal(size=(200, 2)))
    assert same < 0.6
    assert apart > 0.95


def test_compare_refuses_a_batch(small):
    family, _, _, draws, _ = small
    _, x, y = family.sample(3, 10, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="one dataset"):
        compare_with_nuts(family.exact_posterior, family, x, y, reference_draws=draws)
    with pytest.raises(ValueError, match="no site"):
        compare_with_nuts(
            family.exact_posterior, family, x[0], y[0], reference_draws={"v": np.zeros((5, 2))}
        )
