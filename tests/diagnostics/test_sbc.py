"""Simulation-based calibration: the exact posterior passes, an over-confident one fails."""

import numpy as np
import pytest

from iai_prob import pretrained
from iai_prob.diagnostics import plots, sbc
from iai_prob.diagnostics.sbc import ecdf_band, ecdf_difference
from tests.diagnostics.conftest import shrunk


def test_exact_posterior_is_calibrated(family):
    result = sbc(family.exact_posterior, family, 300, num_points=20, khat=True, progress=False)
    assert result.ranks.shape == (300, 3)
    assert result.ranks.min() >= 0 and result.ranks.max() <= 99
    assert result.passed, result.summary()
    assert result.chi2_pvalue.min() > 0.001
    assert 0.85 < result.z_scores.std() < 1.15
    assert np.abs(result.coverage - result.coverage_levels[:, None]).max() < 0.1
    assert (result.contraction > 0).all()


def test_overconfident_posterior_is_flagged(family):
    result = sbc(shrunk(family, 0.4), family, 300, num_points=20, khat=True, progress=False)
    assert not result.passed
    assert result.flagged == ["w[0]", "w[1]", "w[2]"]
    assert result.z_scores.std() > 2
    # intervals too narrow: every nominal level is under-covered
    assert (result.coverage < result.coverage_levels[:, None]).mean() > 0.9
    assert np.median(result.khat) > 0.7
    assert "FAILED" in result.summary()


def test_underconfident_posterior_is_flagged(family):
    result = sbc(shrunk(family, 2.5), family, 300, num_points=20, progress=False)
    assert not result.passed
    assert result.z_scores.std() < 0.6
    assert result.khat is None


def test_ecdf_difference_and_band():
    grid, difference = ecdf_difference(np.zeros(50, dtype=int), 9)
    np.testing.assert_allclose(grid, np.arange(1, 10) / 10)
    np.testing.assert_allclose(difference[:, 0], 1 - grid)
    band = ecdf_band(100, 99, 0.05)
    # the discrete KS band: about 1.36 / sqrt(M) for large L
    assert 0.11 < band < 0.15


def test_pretrained_linear_regression_guide_passes_sbc():
    guide = pretrained.load("linear_regression")
    result = sbc(guide, guide.family, 200, num_points=64, khat=True, progress=False)
    assert result.passed, result.summary()
    assert np.mean(result.khat < 0.7) >= 0.9


def test_plots_draw(family):
    result = sbc(shrunk(family, 0.4), family, 50, num_points=10, progress=False)
    for figure in (
        plots.plot_sbc_ecdf(result),
        plots.plot_rank_histograms(result),
        plots.plot_coverage(result),
        plots.plot_z_contraction(result),
        plots.plot_khat(np.linspace(0, 1, 20)),
    ):
        assert figure.axes and figure.axes[0].has_data()


def test_bad_arguments(family):
    with pytest.raises(ValueError, match="num_datasets"):
        sbc(family.exact_posterior, family, 1)
    with pytest.raises(ValueError, match="alpha"):
        sbc(family.exact_posterior, family, 10, alpha=1.5)
    with pytest.raises(ValueError, match="TaskFamily"):
        sbc(family.exact_posterior, family.model, 10)
