"""NumPyro: datasets of unequal sizes in one padded batch, each with its own answer, and
one compilation per padded shape (the twin of ``tests/inference/test_padded_batches.py``)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iai_prob.models import get_family
from iai_prob.numpyro import IterativeAmortizedGuide
from iai_prob.numpyro.convergence import TRACE_COUNTS
from iai_prob.numpyro.guide import TRACE_COUNTS as REFINE_COUNTS
from iai_prob.posterior_status import PosteriorWarning

SIZES = [3, 20, 40]  # the context is 16 points: below and above it
SMALL = {
    "encoder": "deep_sets",
    "encoder_options": {"embed_dim": 8, "hidden_dim": 16},
    "context_size": 16,
}


def _padded(datasets):
    rows = max(len(y) for _, y in datasets)

    def pad(value):
        return np.concatenate([value, np.repeat(value[:1], rows - len(value), 0)])

    return (
        jnp.asarray(np.stack([pad(x) for x, _ in datasets])),
        jnp.asarray(np.stack([pad(y) for _, y in datasets])),
    )


@pytest.fixture(scope="module")
def logistic():
    family = get_family("logistic_regression", dim=2).on("numpyro")
    datasets = []
    for index, size in enumerate(SIZES):
        _, x, y = family.sample(jax.random.PRNGKey(index), 1, size)
        datasets.append((np.asarray(x[0]), np.asarray(y[0])))
    guide = IterativeAmortizedGuide(family, **SMALL)
    params = guide.init_params(*_padded(datasets))
    return guide, params, datasets


def test_a_padded_batch_gives_each_dataset_its_own_posterior(logistic):
    guide, params, datasets = logistic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PosteriorWarning)
        padded = guide.padded_posterior(params, *_padded(datasets), sizes=np.array(SIZES))
        for index, (x, y) in enumerate(datasets):
            alone = guide.posterior(params, jnp.asarray(x), jnp.asarray(y))
            np.testing.assert_allclose(padded.mean[index], alone.mean, atol=1e-4)
            np.testing.assert_allclose(
                padded.covariance_matrix[index], alone.covariance_matrix, rtol=1e-4, atol=1e-5
            )
            assert padded.status.passes[index] == alone.status.passes
            assert padded.status.khat[index] == pytest.approx(alone.status.khat, abs=1e-3)


def test_one_compilation_serves_every_padded_batch_of_a_shape(logistic):
    guide, params, datasets = logistic
    x, y = _padded(datasets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PosteriorWarning)
        guide.padded_posterior(params, x, y, sizes=np.array(SIZES))
        counts = (REFINE_COUNTS["refine"], TRACE_COUNTS["converge"], TRACE_COUNTS["khat"])
        other = guide.padded_posterior(params, x, y, sizes=np.array([40, 1, 17]))
    assert (REFINE_COUNTS["refine"], TRACE_COUNTS["converge"], TRACE_COUNTS["khat"]) == counts
    assert other.batch_shape == (3,)


def test_padded_batches_refuse_bad_sizes_and_learned_steps(logistic):
    guide, params, datasets = logistic
    x, y = _padded(datasets)
    with pytest.raises(ValueError, match="one size per task"):
        guide.padded_posterior(params, x, y, sizes=np.array([3, 9]))
    with pytest.raises(ValueError, match="1 to 40 rows"):
        guide.padded_posterior(params, x, y, sizes=np.array([0, 20, 40]))
    task = guide.prepare(x, y)
    task = task._replace(data=task.data.padded(np.array(SIZES)))
    with pytest.raises(ValueError, match="equal sizes"):
        guide.run(params, task, num_steps=2)


def test_an_enumerated_mixture_padded_gives_each_dataset_its_own_posterior():
    """Padding is masked out of the observed sites only, so the enumerated assignment of
    a padded point adds nothing (the shipped Gaussian-mixture guide, funsor enumeration)."""
    from iai_prob.numpyro import pretrained

    guide, params = pretrained.load("gaussian_mixture")
    datasets = []
    for index, size in enumerate([7, 30]):
        _, x, y = guide.family.sample(jax.random.PRNGKey(index), 1, size)
        datasets.append((np.asarray(x[0]), np.asarray(y[0])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PosteriorWarning)
        padded = guide.padded_posterior(params, *_padded(datasets), sizes=np.array([7, 30]))
        x, y = datasets[0]  # 7 rows and 23 of padding
        alone = guide.posterior(params, jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(padded.mean[0], alone.mean, atol=1e-4)
    np.testing.assert_allclose(
        padded.covariance_matrix[0], alone.covariance_matrix, rtol=1e-4, atol=1e-5
    )
