"""The bad-input table of ``docs/reliability.md``, one test per row, through the public API.

Every row calls the guide (or loads a checkpoint) the way a user would and checks the
error's type and that its message names the problem; the rows that are accepted
(``N = 1``, float64, integer observations) check that the answer is right instead.
"""

from __future__ import annotations

import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from iai_prob.inference import CheckpointError, IterativeAmortizedGuide
from iai_prob.models import BetaBernoulli, DirichletCategorical


@pytest.fixture
def built(linreg, make_guide, simulate):
    """A guide built on the 2-feature linear regression and one dataset ``(x, y)``, N = 12."""
    guide = make_guide(linreg, family="full_rank", batch_size=4)
    _, x, y = simulate(linreg, 1, 12)
    guide(x[0], y[0])
    return guide, x[0], y[0]


def _with(tensor, index, value):
    tensor = tensor.clone()
    tensor.view(-1)[index] = value
    return tensor


# ------------------------------------------------------------------ data rows
DATA_ROWS = {
    "nan-in-observations": (lambda x, y: (x, _with(y, 3, float("nan"))), "NaN or inf"),
    "inf-in-covariates": (lambda x, y: (_with(x, 5, float("inf")), y), "NaN or inf"),
    "wrong-feature-dimension": (
        lambda x, y: (torch.randn(12, 3), y),
        re.escape("x: float32 tensor of shape (12, 3)"),
    ),
    "observations-of-another-length": (lambda x, y: (x, y[:5]), "observed site 'y'"),
    "empty-dataset": (lambda x, y: (x[:0], y[:0]), "argument 'x' is empty"),
    "empty-batch-of-tasks": (
        lambda x, y: (x[:0].unsqueeze(0), y[:0].unsqueeze(0)),
        "plate of the model has size 0",
    ),
    "integer-covariates": (lambda x, y: (x.round().long(), y), "x: int64 tensor"),
    "numpy-arrays": (lambda x, y: (x.numpy(), y.numpy()), "argument 'x' is a numpy.ndarray"),
    "covariates-without-a-point-axis": (lambda x, y: (x[:, 0], y), "expected x with 2 dims"),
}


@pytest.mark.parametrize("row", sorted(DATA_ROWS))
def test_bad_data_are_refused_by_name(row, built):
    guide, x, y = built
    make_arguments, pattern = DATA_ROWS[row]
    with pytest.raises(ValueError, match=pattern):
        guide.posterior(*make_arguments(x, y))


@pytest.mark.parametrize("row", ["empty-dataset", "integer-covariates", "numpy-arrays"])
def test_bad_data_are_refused_before_the_guide_is_built(row, linreg, make_guide, built):
    _, x, y = built
    make_arguments, pattern = DATA_ROWS[row]
    with pytest.raises(ValueError, match=pattern):
        make_guide(linreg).posterior(*make_arguments(x, y))


def test_a_single_data_point_gives_a_finite_posterior(built, linreg):
    guide, x, y = built
    posterior = guide.posterior(x[:1], y[:1])
    assert torch.isfinite(posterior.mean).all()
    torch.linalg.cholesky(posterior.covariance_matrix)  # positive definite
    # the natural-gradient step is exact for a conjugate model at any N, N = 1 included
    # (measured: 3e-5 nats for this untrained guide)
    exact = linreg.exact_posterior(x[:1], y[:1])
    kl = torch.distributions.kl_divergence(posterior, exact)
    assert torch.isfinite(kl) and kl < 1e-2, float(kl)


def test_float64_inputs_give_the_float32_answer(built):
    guide, x, y = built
    expected = guide.posterior(x, y)
    found = guide.posterior(x.double(), y.double())
    assert found.mean.dtype == torch.float32
    torch.testing.assert_close(found.mean, expected.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(found.covariance_matrix, expected.covariance_matrix)


def test_integer_observations_of_a_categorical_likelihood_are_accepted(make_guide):
    family = DirichletCategorical(num_categories=3, concentration=1.5)
    guide = make_guide(family)
    _, x, y = family.sample(1, 30, generator=torch.Generator().manual_seed(1))
    expected = guide.posterior(x[0], y[0].float())
    found = guide.posterior(x[0], y[0].long())
    torch.testing.assert_close(found.mean, expected.mean)


def test_integer_observations_of_a_bernoulli_likelihood_are_named(make_guide):
    family = BetaBernoulli(concentration1=2.0, concentration0=3.0)
    _, x, y = family.sample(1, 30, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="y: int64 tensor of shape"):
        make_guide(family).posterior(x[0], y[0].long())


def test_an_extra_covariate_changes_the_feature_dimension(make_guide):
    def model(x, y=None, z=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            return pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)

    guide = make_guide(model)
    x, y = torch.randn(10), torch.randn(10)
    guide(x, y)
    with pytest.raises(ValueError, match="3 features per point but the guide was built for 2"):
        guide.posterior(x, y, z=torch.randn(10))


# ------------------------------------------------------------------ model rows
class _SquareSupport(dist.Normal):
    """A distribution whose support has no bijection to unconstrained space."""

    support = constraints.square


class _DependentSupport(dist.Normal):
    """A distribution whose support is not declared (``constraints.dependent``)."""

    support = constraints.dependent


def _regression_with(site):
    def model(x, y=None):
        theta = site()
        with pyro.plate("data", len(x)):
            return pyro.sample("y", dist.Normal(theta.float().sum() * x, 1.0), obs=y)

    return model


def _in_other_plate():
    with pyro.plate("groups", 3):
        return pyro.sample("mu", dist.Normal(0.0, 1.0))


MODEL_ROWS = {
    "discrete-global-latent": (
        _regression_with(lambda: pyro.sample("k", dist.Categorical(torch.ones(3) / 3))),
        {},
        ["'k'", "discrete"],
    ),
    "unsupported-constraint": (
        _regression_with(lambda: pyro.sample("m", _SquareSupport(torch.zeros(2, 2), 1.0))),
        {},
        ["'m'", "no bijection"],
    ),
    "undeclared-support": (
        _regression_with(lambda: pyro.sample("m", _DependentSupport(0.0, 1.0))),
        {},
        ["'m'", "declares no bijection"],
    ),
    "data-plate-not-found": (
        _regression_with(lambda: pyro.sample("w", dist.Normal(0.0, 1.0))),
        {"data_plate": "observations"},
        ["no plate named 'observations'", "found plates ['data']"],
    ),
    "global-latent-in-another-plate": (_regression_with(_in_other_plate), {}, ["'mu'", "groups"]),
    "no-global-latent": (_regression_with(lambda: torch.tensor(1.0)), {}, ["no latent site"]),
}


@pytest.mark.parametrize("row", sorted(MODEL_ROWS))
def test_unsupported_models_are_refused_by_name(row, make_guide):
    model, options, patterns = MODEL_ROWS[row]
    guide = make_guide(model, **options)
    with pytest.raises(ValueError) as info:
        guide.posterior(torch.randn(6), torch.randn(6))
    for pattern in patterns:
        assert pattern in str(info.value)


def test_observations_not_passed_are_named(built):
    guide, x, _ = built
    with pytest.raises(ValueError, match="no observed site inside the data plate 'data'"):
        guide.posterior(x)


# ------------------------------------------------------------- checkpoint rows
def _model_with_sites(*sites):
    """A model whose global sites are ``sites`` = ``((name, size), …)``; every model made
    here has the same qualified name, as one edited user model would."""

    def model(x, y=None):
        total = 0.0
        for name, size in sites:
            value = pyro.sample(name, dist.Normal(0.0, 1.0).expand([size]).to_event(1))
            total = total + value.sum(-1, keepdim=True)
        with pyro.plate("data", len(x)):
            return pyro.sample("y", dist.Normal(total * x, 1.0), obs=y)

    return model


LAYOUT_ROWS = {
    "renamed-site": ((("weights", 2), ("s", 1)), ["missing site(s) ['w']", "unexpected site(s)"]),
    "missing-site": ((("w", 2),), ["missing site(s) ['s']"]),
    "another-latent-shape": ((("w", 3), ("s", 1)), ["site 'w' has shape [3], expected [2]"]),
}


@pytest.mark.parametrize("row", sorted(LAYOUT_ROWS))
def test_a_checkpoint_for_another_latent_layout_is_refused(row, make_guide, tmp_path):
    original = _model_with_sites(("w", 2), ("s", 1))
    guide = make_guide(original)
    x, y = torch.randn(8), torch.randn(8)
    guide(x, y)
    guide.save(tmp_path / "guide")
    sites, patterns = LAYOUT_ROWS[row]
    loaded = IterativeAmortizedGuide.load(tmp_path / "guide", _model_with_sites(*sites))
    with pytest.raises(ValueError, match="differ from those the guide was built for") as info:
        loaded.posterior(x, y)
    for pattern in patterns:
        assert pattern in str(info.value)
    # the same checkpoint loads and runs for the model it was trained for
    same = IterativeAmortizedGuide.load(tmp_path / "guide", original)
    torch.testing.assert_close(same.posterior(x, y).mean, guide.posterior(x, y).mean)


def test_a_checkpoint_for_another_model_is_refused(built, tmp_path):
    guide, _, _ = built
    guide.save(tmp_path / "guide")
    with pytest.raises(CheckpointError, match="trained for model"):
        IterativeAmortizedGuide.load(tmp_path / "guide", BetaBernoulli())
