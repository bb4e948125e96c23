"""Small conjugate tasks with exact posteriors for the diagnostics tests."""

import pytest
import torch

from iai_prob.models import LinearRegression


@pytest.fixture
def family():
    return LinearRegression(dim=3, noise_scale=0.5)


@pytest.fixture
def dataset(family):
    """``(theta, x, y)`` of one task with 40 points."""
    theta, x, y = family.sample(1, 40, generator=torch.Generator().manual_seed(7))
    return {k: v[0] for k, v in theta.items()}, x[0], y[0]


def shrunk(family, factor):
    """The exact posterior with its scale multiplied by ``factor`` (over-confident if < 1)."""

    def posterior(x, y):
        exact = family.exact_posterior(x, y)
        return torch.distributions.MultivariateNormal(
            exact.loc, scale_tril=factor * exact.scale_tril
        )

    return posterior


@pytest.fixture(scope="session", autouse=True)
def _headless_matplotlib():
    import matplotlib

    matplotlib.use("Agg")
