"""Property-based tests: random shapes and values either give a valid posterior or a
clear error (``ValueError`` naming the problem, or ``RefinementError``), never a crash,
a NaN, or a covariance that is not positive definite."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iai_prob.inference import IterativeAmortizedGuide, RefinementError
from iai_prob.models import LinearRegression

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # a fixed example sequence: the suite's timing and result are stable
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_GUIDES: dict[str, IterativeAmortizedGuide] = {}


def _scale_regression(x, y=None):
    """A positive and a real global latent: ``y ~ Normal(w x, s)``."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal(w * x, s), obs=y)


def _guide(name: str) -> IterativeAmortizedGuide:
    """One built, untrained guide per model, shared by the examples."""
    if name not in _GUIDES:
        torch.manual_seed(0)
        model = LinearRegression(dim=2, noise_scale=0.5) if name == "linreg" else _scale_regression
        guide = IterativeAmortizedGuide(
            model,
            encoder="deep_sets",
            encoder_options={"embed_dim": 8, "hidden_dim": 16},
            batch_size=8,
        )
        x = torch.randn(8, 2) if name == "linreg" else torch.randn(8)
        guide(x, torch.randn(8))
        _GUIDES[name] = guide
    return _GUIDES[name]


values = st.one_of(
    st.floats(-10.0, 10.0, width=32),
    st.floats(-1e6, 1e6, width=32),
    st.sampled_from([0.0, float("nan"), float("inf"), -float("inf"), 1e-30]),
)


@st.composite
def datasets(draw, feature_dims):
    """``(x, y)`` with random N, feature width, lengths, batching and values."""
    num_points = draw(st.integers(0, 40))
    dim = draw(feature_dims)
    y_points = draw(st.sampled_from([num_points, num_points, num_points, num_points + 1]))
    tasks = draw(st.sampled_from([(), (), (3,)]))
    x_shape = (*tasks, num_points, *dim)
    y_shape = (*tasks, y_points)
    size_x, size_y = torch.Size(x_shape).numel(), torch.Size(y_shape).numel()
    if draw(st.booleans()):  # ordinary data, or arbitrary floats including non-finite ones
        generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        x = torch.randn(x_shape, generator=generator)
        y = torch.randn(y_shape, generator=generator) * draw(st.sampled_from([1.0, 1e3, 1e-3]))
    else:
        x = torch.tensor(draw(st.lists(values, min_size=size_x, max_size=size_x))).reshape(x_shape)
        y = torch.tensor(draw(st.lists(values, min_size=size_y, max_size=size_y))).reshape(y_shape)
    return x, y


def _check_valid_or_clear(guide, x, y):
    try:
        posterior = guide.posterior(x, y)
    except (ValueError, RefinementError) as error:
        assert len(str(error)) > 20, repr(error)  # a sentence, not a bare code
        return
    assert torch.isfinite(posterior.mean).all()
    covariance = posterior.covariance_matrix
    assert torch.isfinite(covariance).all()
    assert torch.linalg.cholesky_ex(covariance)[1].eq(0).all(), "not positive definite"


@SETTINGS
@given(datasets(st.sampled_from([(2,), (2,), (1,), (3,)])))
def test_linear_regression_guide_is_valid_or_refuses(data):
    _check_valid_or_clear(_guide("linreg"), *data)


@SETTINGS
@given(datasets(st.just(())))
def test_constrained_latents_are_valid_or_refused(data):
    _check_valid_or_clear(_guide("scale"), *data)
