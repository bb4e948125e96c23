"""Datasets of unequal sizes in one padded batch: each task's answer is its answer alone."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from iai_prob import pretrained
from iai_prob.inference import IterativeAmortizedGuide
from iai_prob.inference.encoders import get_encoder
from iai_prob.models import LogisticRegression

SIZES = [3, 17, 40, 130, 300]  # below and above the context size (128), 3 below d


def _padded(datasets):
    """``(x, y)`` stacked to the longest dataset, each padded with its first row."""
    rows = max(len(y) for _, y in datasets)

    def pad(value):
        return torch.cat([value, value[:1].expand(rows - len(value), *value.shape[1:])])

    return torch.stack([pad(x) for x, _ in datasets]), torch.stack([pad(y) for _, y in datasets])


def _datasets(family, sizes):
    out = []
    for index, size in enumerate(sizes):
        _, x, y = family.sample(1, size, generator=torch.Generator().manual_seed(index))
        out.append((x[0], y[0]))
    return out


def _assert_each_is_its_own(guide, datasets, padded):
    for index, (x, y) in enumerate(datasets):
        alone = guide.posterior(x, y)
        assert torch.allclose(padded.mean[index], alone.mean, atol=1e-4), index
        assert torch.allclose(
            padded.covariance_matrix[index], alone.covariance_matrix, rtol=1e-4, atol=1e-5
        ), index
        assert padded.status.passes[index] == alone.status.passes
        assert padded.status.khat[index] == pytest.approx(alone.status.khat, abs=1e-3)


@pytest.mark.filterwarnings("ignore::iai_prob.posterior_status.PosteriorWarning")
def test_a_padded_batch_gives_each_dataset_its_own_posterior():
    guide = pretrained.load("logistic_regression")
    datasets = _datasets(guide.family, SIZES)
    padded = guide.padded_posterior(*_padded(datasets), sizes=torch.tensor(SIZES))
    assert padded.batch_shape == (len(SIZES),)
    _assert_each_is_its_own(guide, datasets, padded)


@pytest.mark.filterwarnings("ignore::iai_prob.posterior_status.PosteriorWarning")
def test_an_enumerated_mixture_padded_gives_each_dataset_its_own_posterior():
    """Padding is masked out of the observed sites only: the enumerated assignment of a
    padded point sums its normalized probabilities to one and adds nothing."""
    guide = pretrained.load("gaussian_mixture")
    datasets = []
    for index, size in enumerate([7, 30, 64]):
        _, x, y = guide.family.sample(1, size, generator=torch.Generator().manual_seed(index))
        datasets.append((x[0], y[0]))
    padded = guide.padded_posterior(*_padded(datasets), sizes=torch.tensor([7, 30, 64]))
    _assert_each_is_its_own(guide, datasets, padded)


def _user_model(x, y=None):
    """A Poisson regression written by a user: tasks outside, a data plate inside."""
    with pyro.plate("tasks", x.shape[0], dim=-2):
        w = pyro.sample("w", dist.Normal(0.0, 10.0).expand([x.shape[-1]]).to_event(1))
        with pyro.plate("data", x.shape[1], dim=-1):
            rate = (x * w).sum(-1).clamp(max=20.0).exp()
            return pyro.sample("y", dist.Poisson(rate), obs=y)


@pytest.mark.parametrize("encoder", ["deep_sets", "set_transformer"])
@pytest.mark.filterwarnings("ignore::iai_prob.posterior_status.PosteriorWarning")
def test_a_users_model_padded_gives_each_dataset_its_own_posterior(encoder):
    generator = torch.Generator().manual_seed(4)
    datasets = []
    for size in (6, 25, 60):
        x = torch.randn(size, 2, generator=generator)
        y = torch.poisson((0.5 * x[:, 0] - 0.3 * x[:, 1] + 1.0).exp(), generator=generator)
        datasets.append((x, y))
    guide = IterativeAmortizedGuide(_user_model, encoder=encoder)
    x, y = _padded(datasets)
    padded = guide.padded_posterior(x, y, sizes=torch.tensor([6, 25, 60]))
    alone = [guide.posterior(x[None], y[None]) for x, y in datasets]
    for index, answer in enumerate(alone):
        assert torch.allclose(padded.mean[index], answer.mean[0], atol=1e-4)
        assert torch.allclose(
            padded.covariance_matrix[index], answer.covariance_matrix[0], rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("name", ["deep_sets", "set_transformer"])
def test_a_masked_encoder_sees_the_valid_points_alone(name):
    torch.manual_seed(0)
    encoder = get_encoder(name, 3)
    valid = torch.randn(2, 7, 3)
    padded = torch.cat([valid, 100 * torch.randn(2, 5, 3)], dim=1)
    mask = torch.arange(12) < 7
    sizes = torch.tensor([50.0, 900.0])
    expected = encoder(valid, sizes)
    got = encoder(padded, sizes, mask.expand(2, 12))
    assert torch.allclose(got, expected, atol=1e-5)
    # the count is per task: each task's embedding reads its own N
    assert torch.allclose(encoder(valid[:1], 50), expected[:1], atol=1e-6)


def test_the_padding_weighs_nothing_in_the_log_joint():
    family = LogisticRegression(dim=3)
    guide = IterativeAmortizedGuide(family)
    datasets = _datasets(family, [5, 9])
    x, y = _padded(datasets)
    y[0, 5:] = 1 - y[0, 5:]  # padding that would change the likelihood if it counted
    task = guide.prepare(x, y)
    data = task.data.padded(torch.tensor([5, 9]))
    z = torch.randn(4, 2, 3)
    padded = task.log_joint.per_particle(z, data)
    for index, (x_t, y_t) in enumerate(datasets):
        alone = guide.prepare(x_t[None], y_t[None])
        expected = alone.log_joint.per_particle(z[:, index : index + 1], alone.data)[:, 0]
        assert torch.allclose(padded[:, index], expected, atol=1e-4)


def test_padded_batches_refuse_bad_sizes_and_learned_steps():
    family = LogisticRegression(dim=3)
    guide = IterativeAmortizedGuide(family)
    x, y = _padded(_datasets(family, [5, 9]))
    with pytest.raises(ValueError, match="one size per task"):
        guide.padded_posterior(x, y, sizes=torch.tensor([5, 9, 9]))
    with pytest.raises(ValueError, match="1 to 9 rows"):
        guide.padded_posterior(x, y, sizes=torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="1 to 9 rows"):
        guide.padded_posterior(x, y, sizes=torch.tensor([5, 10]))
    guide.convergence = None  # the answer would be the learned steps'
    with pytest.raises(ValueError, match="equal sizes"):
        guide.padded_posterior(x, y, sizes=torch.tensor([5, 9]))
