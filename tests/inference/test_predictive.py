"""``iai_prob.inference.Predictive``: Pyro's ``Predictive`` results (same sites, same
shapes) with the guide's draws from one solve and one vectorized model run."""

from __future__ import annotations

import pyro.infer
import torch

from iai_prob.inference import IterativeAmortizedGuide, Predictive
from iai_prob.models import get_family


def _guide_and_data(num_tasks=None):
    family = get_family("logistic_regression", dim=3)
    _, x, y = family.sample(num_tasks or 1, 30, generator=torch.Generator().manual_seed(2))
    data = (x, y) if num_tasks else (x[0], y[0])
    return family, IterativeAmortizedGuide(family), data


def _shapes(samples: dict) -> dict:
    return {site: tuple(value.shape) for site, value in samples.items()}


def test_the_sites_and_shapes_of_pyros_predictive_with_the_guides_own_draws():
    family, guide, (x, y) = _guide_and_data()
    for return_sites in ((), ["w"]):
        pyros = pyro.infer.Predictive(
            family.model, guide=guide, num_samples=4, return_sites=return_sites
        )(x, y)
        ours = Predictive(family.model, guide=guide, num_samples=4, return_sites=return_sites)(x, y)
        assert _shapes(ours) == _shapes(pyros)
    draws = guide.sample(x, y, num_samples=4)
    torch.testing.assert_close(ours["w"].reshape(4, -1), draws["w"].reshape(4, -1))


def test_a_batch_of_tasks_keeps_its_tasks_plate():
    family, guide, (x, y) = _guide_and_data(num_tasks=2)
    pyros = pyro.infer.Predictive(family.model, guide=guide, num_samples=3)(x, y)
    ours = Predictive(family.model, guide=guide, num_samples=3)(x, y)
    assert _shapes(ours) == _shapes(pyros)
    draws = guide.sample(x, y, num_samples=3)
    torch.testing.assert_close(ours["w"].reshape(3, 2, -1), draws["w"].reshape(3, 2, -1))


def test_predictions_of_the_data_come_from_the_model_at_each_draw():
    family, guide, (x, y) = _guide_and_data()
    draws = Predictive(family.model, guide=guide, num_samples=200, return_sites=["w"])(x, y)
    # the model's own predictive at those draws, with the observations left out
    predictions = Predictive(family.model, posterior_samples=draws, num_samples=200)(x)
    assert predictions["y"].shape == (200, 30)
    probabilities = torch.sigmoid((x * draws["w"].reshape(200, 1, 3)).sum(-1)).mean(0)
    torch.testing.assert_close(predictions["y"].mean(0), probabilities, atol=0.15, rtol=0)
