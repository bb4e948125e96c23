"""Real-image task families on scikit-learn's digits: few-shot classification, generation."""

from __future__ import annotations

import pytest
import torch
from pyro import poutine

from iai_prob.models.digits import DigitsFewShot, DigitsGeneration, load_digits_tensors


def test_few_shot_tasks_are_relabelled_subsets_of_the_allowed_classes():
    family = DigitsFewShot(num_ways=3, dim=6, classes=(0, 1, 2, 3))
    theta, x, y = family.sample(5, 40, generator=torch.Generator().manual_seed(0))
    assert theta == {} and x.shape == (5, 40, 6) and y.shape == (5, 40)
    assert y.dtype == torch.long and set(y.unique().tolist()) <= {0, 1, 2}
    _, labels = load_digits_tensors()
    allowed = torch.isin(labels, torch.tensor([0, 1, 2, 3]))
    fitted = torch.isin(labels, torch.tensor(family.pca_classes))  # standardized on these
    assert torch.isclose(family.features[fitted].std(0), torch.ones(6), atol=1e-4).all()
    # every point's features are those of an image of an allowed class
    distances = torch.cdist(x.reshape(-1, 6), family.features)
    assert allowed[distances.argmin(-1)].all()
    trace = poutine.trace(family.model).get_trace(x, y)
    assert trace.nodes["weights"]["value"].shape == (5, 1, 3, 6)
    assert trace.nodes["y"]["fn"].batch_shape == (5, 40)
    assert torch.isfinite(trace.log_prob_sum())


def test_held_out_classes_share_the_training_projection():
    train = DigitsFewShot(dim=4)
    held_out = DigitsFewShot(dim=4, classes=(7, 8, 9))
    torch.testing.assert_close(train.features, held_out.features)
    _, x, _ = held_out.sample(2, 30, generator=torch.Generator().manual_seed(1))
    labels = load_digits_tensors()[1]
    nearest = torch.cdist(x.reshape(-1, 4), held_out.features).argmin(-1)
    assert torch.isin(labels[nearest], torch.tensor([7, 8, 9])).all()


@pytest.mark.parametrize(
    "kwargs", [{"num_ways": 0}, {"classes": (1, 1, 2)}, {"classes": (1, 2)}, {"dim": 65}]
)
def test_few_shot_bad_arguments_are_named(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        DigitsFewShot(**kwargs)


def test_generation_tasks_hold_one_class_and_the_posterior_is_exact():
    family = DigitsGeneration(classes=(3,), concentration=1.0)
    _, x, y = family.sample(2, 50, generator=torch.Generator().manual_seed(2))
    assert x.shape == (2, 50, 0) and y.shape == (2, 50, 64)
    images, labels = load_digits_tensors()
    binary = (images > 8).float()
    matches = (y.reshape(-1, 1, 64) == binary.unsqueeze(0)).all(-1)
    assert (labels[matches.float().argmax(-1)] == 3).all()
    posterior = family.exact_posterior(x[0], y[0])
    ones = y[0].sum(0)
    torch.testing.assert_close(posterior.mean, (1 + ones) / (2 + 50))
    trace = poutine.trace(family.model).get_trace(x, y)
    assert trace.nodes["probs"]["value"].shape == (2, 1, 64)
    with pytest.raises(ValueError, match="threshold"):
        DigitsGeneration(threshold=16)
    with pytest.raises(ValueError, match="classes"):
        DigitsGeneration(classes=(10,))
