"""``to_inference_data``: groups, dims, shapes, exact importance weights, ArviZ functions."""

import arviz as az
import numpy as np
import pytest
import torch
import xarray as xr

from iai_prob.diagnostics import to_inference_data
from iai_prob.inference import IterativeAmortizedGuide


def test_groups_dims_and_shapes(family, dataset):
    _, x, y = dataset
    idata = to_inference_data(
        family.exact_posterior, family, x, y, num_samples=200, num_chains=2, seed=1
    )
    expected = {
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "observed_data",
        "constant_data",
        "sample_stats",
    }
    assert set(idata.groups()) == expected
    assert idata.posterior["w"].dims == ("chain", "draw", "w_dim_0")
    assert idata.posterior["w"].shape == (2, 100, 3)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "data")
    assert idata.log_likelihood["y"].shape == (2, 100, 40)
    assert idata.posterior_predictive["y"].shape == (2, 100, 40)
    assert idata.observed_data["y"].dims == ("data",)
    np.testing.assert_array_equal(idata.observed_data["y"].values, y.numpy())
    assert idata.constant_data["x"].dims == ("data", "x_dim_0")
    assert set(idata.sample_stats.data_vars) == {"log_importance_weight", "lp", "log_q"}


def test_exact_posterior_weights_equal_the_evidence(family, dataset):
    """For q = p(θ | D), log p(D, θ) − log q(θ) = log p(D) for every draw."""
    _, x, y = dataset
    idata = to_inference_data(family.exact_posterior, family, x, y, num_samples=100)
    log_w = idata.sample_stats["log_importance_weight"].values
    np.testing.assert_allclose(log_w, float(family.log_evidence(x, y)), atol=2e-3)


def test_pointwise_log_likelihood_and_predictive_match_the_model(family, dataset):
    _, x, y = dataset
    idata = to_inference_data(family.exact_posterior, family, x, y, num_samples=50, seed=3)
    w = torch.as_tensor(idata.posterior["w"].values[0])  # (S, d)
    mean = w @ x.T  # (S, N)
    expected = torch.distributions.Normal(mean, family.noise_scale).log_prob(y)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], expected, atol=1e-4)
    residual = idata.posterior_predictive["y"].values[0] - mean.numpy()
    assert abs(residual.std() - family.noise_scale) < 0.05


def test_summary_and_loo_run_on_a_guide(family, dataset):
    _, x, y = dataset
    guide = IterativeAmortizedGuide(family, encoder="deep_sets")
    idata = to_inference_data(guide, None, x, y, num_samples=400, num_chains=4)
    summary = az.summary(idata, var_names=["w"])
    assert list(summary.index) == ["w[0]", "w[1]", "w[2]"]
    loo = az.loo(idata)
    assert np.isfinite(loo["elpd_loo"])
    assert loo["n_data_points"] == 40


def test_a_batch_of_tasks_has_a_tasks_dim(family):
    _, x, y = family.sample(5, 30, generator=torch.Generator().manual_seed(2))
    idata = to_inference_data(family.exact_posterior, family, x, y, num_samples=60)
    assert idata.posterior["w"].dims == ("chain", "draw", "tasks", "w_dim_0")
    assert idata.posterior["w"].shape == (1, 60, 5, 3)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "tasks", "data")
    assert idata.sample_stats["log_importance_weight"].dims == ("chain", "draw", "tasks")
    assert idata.constant_data["x"].dims == ("tasks", "data", "x_dim_0")
    np.testing.assert_allclose(
        idata.sample_stats["log_importance_weight"].values[0],
        np.broadcast_to(family.log_evidence(x, y).numpy(), (60, 5)),
        atol=2e-3,
    )


def test_datatree_for_arviz_1(family, dataset):
    _, x, y = dataset
    tree = to_inference_data(family.exact_posterior, family, x, y, num_samples=20, datatree=True)
    assert isinstance(tree, xr.DataTree)
    assert set(tree.children) >= {"posterior", "log_likelihood", "sample_stats"}
    assert tree["posterior"]["w"].shape == (1, 20, 3)


def test_bad_arguments_are_named(family, dataset):
    _, x, y = dataset
    with pytest.raises(ValueError, match="num_samples"):
        to_inference_data(family.exact_posterior, family, x, y, num_samples=99, num_chains=2)
    with pytest.raises(ValueError, match="num_chains"):
        to_inference_data(family.exact_posterior, family, x, y, num_chains=0)
    with pytest.raises(ValueError, match="event shape"):
        to_inference_data(
            lambda x, y: torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)),
            family,
            x,
            y,
        )
    with pytest.raises(ValueError, match="model is required"):
        to_inference_data(family.exact_posterior, None, x, y)
    with pytest.raises(ValueError, match="the data come after it"):
        to_inference_data(family.exact_posterior, x, y)


def test_enumerated_mixture_log_likelihood_sums_out_the_assignments():
    """For the Gaussian mixture the pointwise log-likelihood is log Σ_k π_k N(y_n | μ_k, σ²)."""
    from iai_prob.models import GaussianMixture

    family = GaussianMixture(dim=2, num_components=2)
    _, x, y = family.sample(1, 15, generator=torch.Generator().manual_seed(4))
    guide = IterativeAmortizedGuide(family, encoder="deep_sets")
    idata = to_inference_data(guide, None, x[0], y[0], num_samples=8)
    assert idata.posterior["locs"].dims == ("chain", "draw", "locs_dim_0", "locs_dim_1")
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "data", "y_dim_0")
    weights = torch.as_tensor(idata.posterior["weights"].values[0])  # (S, K)
    locs = torch.as_tensor(idata.posterior["locs"].values[0])  # (S, K, d)
    component = torch.distributions.Normal(locs[:, :, None], family.noise_scale)
    joint = component.log_prob(y[0][None, None]).sum(-1) + weights.log()[:, :, None]
    expected = joint.logsumexp(1)  # (S, N)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], expected, atol=1e-4)
    assert np.isfinite(idata.sample_stats["log_importance_weight"].values).all()
