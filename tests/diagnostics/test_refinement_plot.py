"""ELBO and exact KL against the refinement step of the pretrained linear-regression guide."""

import numpy as np
import pytest

from iai_prob import pretrained
from iai_prob.datasets import load_linear_regression_demo
from iai_prob.diagnostics import RefinementCurve, refinement_curve, refinement_plot


@pytest.fixture(scope="module")
def curve():
    guide = pretrained.load("linear_regression")
    x, y, _ = load_linear_regression_demo()
    return refinement_curve(guide, x[:512], y[:512], num_samples=32)


def test_curve_has_one_entry_per_step(curve):
    assert isinstance(curve, RefinementCurve)
    assert len(curve.steps) == len(curve.elbo) == len(curve.kl) == 512 // 64 + 1
    assert curve.points_seen[-1] == 512


def test_refinement_lowers_the_exact_kl(curve):
    assert curve.kl[-1] < 0.5  # the card quotes a median of 0.02 nats at N = 256
    assert curve.kl[-1] < curve.kl[0]
    # ELBO = log p(D) − KL: the Monte Carlo ELBO sits below the exact evidence by ≈ KL
    assert curve.elbo[-1] == pytest.approx(curve.log_evidence - curve.kl[-1], abs=0.5)


def test_plot_has_elbo_and_kl_panels(curve):
    figure = refinement_plot(curve)
    assert len(figure.axes) == 2
    assert figure.axes[1].get_yscale() == "log"


def test_no_kl_without_an_exact_posterior():
    guide = pretrained.load("logistic_regression")
    x, y = guide.family.sample(1, 100)[1:]
    curve = refinement_curve(guide, x[0], y[0], num_samples=8)
    assert curve.kl is None and curve.log_evidence is None
    assert np.isfinite(curve.elbo).all()
    assert len(refinement_plot(curve).axes) == 1
