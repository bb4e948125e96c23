"""The start in prior units (:mod:`iai_prob.prior_standardization`): an untrained guide
starts at the model's prior, in any units, and the cards written before the option keep
the standard-normal start they were trained from."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from iai_prob import pretrained
from iai_prob.inference import IterativeAmortizedGuide
from iai_prob.inference.objectives import elbo
from iai_prob.prior_standardization import SitePrior, prior_location_scale


def _raw_units_model(x, y=None):
    """An intercept in test-score units, three slopes, a half-normal noise scale."""
    a = pyro.sample("a", dist.Normal(500.0, 100.0))
    b = pyro.sample("b", dist.Normal(0.0, 0.5).expand([3]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(10.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(a + (x * b).sum(-1), sigma), obs=y)


def _state(guide, x, y):
    task = guide._prepared(x, y)
    with torch.no_grad():
        return guide.refiner.init(task.data), task


def test_an_untrained_guide_starts_at_the_prior():
    x, y = torch.randn(40, 3), 500.0 + 10.0 * torch.randn(40)
    guide = IterativeAmortizedGuide(_raw_units_model, num_steps=0, convergence=None)
    guide(x, y)
    state, _ = _state(guide, x, y)
    # normal priors: their exact mean and sd; the half-normal's log: median and MAD-sd of
    # its draws (log|N(0, 10²)| has median log(10 · 0.6745) and MAD 0.6106, measured on
    # 10⁷ draws)
    expected_loc = torch.tensor([500.0, 0.0, 0.0, 0.0, math.log(10.0 * 0.6745)])
    expected_sd = torch.tensor([100.0, 0.5, 0.5, 0.5, 1.4826 * 0.6106])
    torch.testing.assert_close(state.loc[0, :4], expected_loc[:4])
    torch.testing.assert_close(state.precision[0, :4, :4], torch.diag(expected_sd[:4] ** -2))
    assert abs(float(state.loc[0, 4]) - float(expected_loc[4])) < 0.05
    assert abs(float(state.precision[0, 4, 4]) ** -0.5 / float(expected_sd[4]) - 1) < 0.05


def test_the_standard_normal_start_is_still_there_when_asked_for():
    x, y = torch.randn(40, 3), 500.0 + 10.0 * torch.randn(40)
    guide = IterativeAmortizedGuide(
        _raw_units_model, num_steps=0, convergence=None, standardize=False
    )
    guide(x, y)
    state, _ = _state(guide, x, y)
    torch.testing.assert_close(state.loc, torch.zeros(1, 5))
    torch.testing.assert_close(state.precision, torch.eye(5).expand(1, 5, 5))
    assert "prior_loc" not in guide.refiner.state_dict()


def _poisson_raw_covariates(x, y=None):
    """A log-link count model on raw covariates of size ~8 (as randhie's)."""
    a = pyro.sample("a", dist.Normal(0.0, 2.5))
    b = pyro.sample("b", dist.Normal(0.0, 0.5).expand([x.shape[-1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Poisson(torch.exp(a + (x * b).sum(-1))), obs=y)


def test_raw_unit_counts_get_a_moderate_elbo_at_the_untrained_start():
    """The randhie defect: from N(0, I), draws put exp(a + xᵀb) near float32's range, so
    the untrained guide's ELBO (the first training loss, and its gradient) is astronomical
    (−1.7e22 nats here, past the range on larger draws); from the prior, a million times
    smaller (−1.3e11: the prior itself puts rates up to e¹⁶ on these covariates)."""
    generator = torch.Generator().manual_seed(0)
    x = 8.0 * torch.rand(256, 8, generator=generator)
    y = torch.poisson(torch.full((256,), 3.0), generator=generator)
    values = {}
    for standardize in (False, True):
        guide = IterativeAmortizedGuide(
            _poisson_raw_covariates, num_steps=0, convergence=None, standardize=standardize
        )
        guide(x, y)
        state, task = _state(guide, x, y)
        torch.manual_seed(0)
        with torch.no_grad():
            values[standardize] = float(
                elbo(state, guide.refiner.family, task.log_joint, task.data, num_samples=64)
            )
    assert not values[False] > -1e15
    assert math.isfinite(values[True]) and 1e6 * values[True] > values[False]


def test_shipped_checkpoints_keep_the_start_they_were_trained_from():
    """Their cards predate the option: they load unstandardized, no prior weights."""
    name = pretrained.available()[0]
    guide = pretrained.load(name)
    assert guide.config["standardize"] is False
    assert not guide.refiner.options.standardize
    assert "prior_loc" not in guide.refiner.state_dict()


def test_a_standardized_guide_saves_and_loads_its_prior(tmp_path):
    x, y = torch.randn(40, 3), 500.0 + 10.0 * torch.randn(40)
    guide = IterativeAmortizedGuide(_raw_units_model, num_steps=0, convergence=None)
    guide(x, y)
    guide.save(tmp_path / "guide")
    loaded = IterativeAmortizedGuide.load(tmp_path / "guide", _raw_units_model)
    for name in ("prior_loc", "prior_scale"):
        torch.testing.assert_close(getattr(loaded.refiner, name), getattr(guide.refiner, name))


def test_heavy_tailed_and_degenerate_draws_get_finite_scales():
    class Site:
        def __init__(self, name, numel):
            self.name, self.numel = name, numel

    class Layout:
        sites = (Site("cauchy", 1), Site("point", 2))

    rng = np.random.default_rng(0)
    priors = {
        "cauchy": SitePrior(draws=rng.standard_cauchy((4096, 1))),
        "point": SitePrior(draws=np.full((4096, 2), 7.0)),
    }
    loc, scale = prior_location_scale(Layout, priors)
    assert abs(loc[0]) < 0.1 and abs(scale[0] / 1.4826 - 1) < 0.1  # Cauchy: MAD = 1
    np.testing.assert_array_equal(loc[1:], [7.0, 7.0])
    np.testing.assert_array_equal(scale[1:], [1.0, 1.0])  # no spread: s = 1
    with pytest.raises(ValueError, match="site 'cauchy'"):
        prior_location_scale(Layout, {**priors, "cauchy": SitePrior(draws=np.full((8, 1), np.nan))})
