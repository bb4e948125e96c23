"""Explicit-regime families: latent neural process and neural statistician (shapes, errors)."""

from __future__ import annotations

import pytest
import torch
from pyro import poutine
from pyro.nn import PyroModule

from iai_prob.models import GaussianMixture, LinearRegression, LogisticRegression
from iai_prob.models.neural_process import LatentNeuralProcess
from iai_prob.models.neural_statistician import NeuralStatistician


@pytest.mark.parametrize(
    ("likelihood", "data", "y_dtype"),
    [
        ("gaussian", LinearRegression(dim=3), torch.float32),
        ("bernoulli", LogisticRegression(dim=3), torch.float32),
    ],
)
@pytest.mark.parametrize("batched", [True, False])
def test_neural_process_model_shapes(likelihood, data, y_dtype, batched):
    family = LatentNeuralProcess(data, latent_dim=2, hidden=8, likelihood=likelihood)
    _, x, y = data.sample(4, 5)
    if not batched:
        x, y = x[0], y[0]
    trace = poutine.trace(family.model).get_trace(x, y)
    assert trace.nodes["z"]["value"].shape == ((4, 1, 2) if batched else (2,))
    assert trace.nodes["y"]["fn"].batch_shape == y.shape
    params = [n for n, site in trace.nodes.items() if site["type"] == "param"]
    assert params and all(n.startswith("latent_neural_process_decoder_") for n in params)
    assert torch.isfinite(trace.log_prob_sum())


def test_categorical_neural_process_and_errors():
    data = LinearRegression(dim=2)
    family = LatentNeuralProcess(data, latent_dim=3, likelihood="categorical", num_classes=5)
    x = torch.randn(7, 2)
    assert family.predictive(x, torch.zeros(3)).logits.shape == (7, 5)
    with pytest.raises(ValueError, match="likelihood"):
        LatentNeuralProcess(data, likelihood="poisson")
    with pytest.raises(ValueError, match="2 features"):
        family.predictive(torch.randn(7, 4), torch.zeros(3))
    with pytest.raises(ValueError, match="data_family"):
        LatentNeuralProcess("linear_regression")
    with pytest.raises(ValueError, match="latent_dim"):
        LatentNeuralProcess(data, latent_dim=0)


def test_decoders_are_distinct_pyro_modules_and_the_simulator_has_no_latents():
    data = LinearRegression(dim=2)
    first, second = LatentNeuralProcess(data), LatentNeuralProcess(data)
    assert isinstance(first.decoder, PyroModule)
    assert first.decoder._pyro_name != second.decoder._pyro_name
    theta, x, y = first.sample(3, 4)
    assert theta == {} and x.shape == (3, 4, 2) and y.shape == (3, 4)
    assert first.config()["data_family"] == "linear_regression"
    assert "LatentNeuralProcess(" in repr(first)


@pytest.mark.parametrize("batched", [True, False])
def test_neural_statistician_shapes_and_generation(batched):
    data = GaussianMixture(dim=2, num_components=2)
    family = NeuralStatistician(data, latent_dim=3, hidden=8, num_components=3)
    _, x, y = data.sample(4, 6)
    if not batched:
        x, y = x[0], y[0]
    trace = poutine.trace(family.model).get_trace(x, y)
    assert trace.nodes["y"]["fn"].batch_shape == y.shape[:-1]
    assert torch.isfinite(trace.log_prob_sum())
    z = torch.zeros(4, 3)
    assert family.generate(z, 10).shape == (4, 10, 2)
    bernoulli = NeuralStatistician(data, latent_dim=3, observation="bernoulli", num_components=2)
    assert bernoulli.density(z).sample().shape == (4, 2)
    with pytest.raises(ValueError, match="GenerativeTaskFamily"):
        NeuralStatistician(LinearRegression(dim=2))
    with pytest.raises(ValueError, match="observation"):
        NeuralStatistician(data, observation="poisson")
