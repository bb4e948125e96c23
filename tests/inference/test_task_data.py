"""``read_task_data`` and ``TaskData``: features, mini-batches, featurize, bad data."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from iai_prob.inference.task_data import read_task_data


def _read(model, *args, featurize=None, **kwargs):
    with poutine.block():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    return read_task_data(
        trace, args, kwargs, data_plate="data", tasks_plate="tasks", featurize=featurize
    )


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_features_are_observations_then_covariates(batched, linreg, dataset):
    x, y = dataset(linreg, 3, 10, batched, task=1)
    data = _read(linreg.model, x, y)
    tasks = 3 if batched else 1
    assert data.features.shape == (tasks, 10, 1 + linreg.dim)
    torch.testing.assert_close(data.features[..., 0], y.reshape(tasks, 10))
    torch.testing.assert_close(data.features[..., 1:], x.reshape(tasks, 10, linreg.dim))
    assert (data.num_tasks, data.num_points, data.total_points) == (
        3 if batched else None,
        10,
        10,
    )
    assert data.likelihood_scale == 1.0


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_subset_slices_along_the_data_axis(batched, linreg, dataset):
    x, y = dataset(linreg, 3, 10, batched, task=1)
    data = _read(linreg.model, x, y)
    index = torch.tensor([9, 2, 5])
    batch = data.subset(index)
    axis = 1 if batched else 0
    torch.testing.assert_close(batch.args[0], x.index_select(axis, index))
    torch.testing.assert_close(batch.args[1], y.index_select(axis, index))
    torch.testing.assert_close(batch.features, data.features[:, index])
    assert (batch.num_points, batch.total_points) == (3, 10)
    assert batch.likelihood_scale == pytest.approx(10 / 3)


def _scaled_model(x, y=None, scale=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(w * x * scale, 1.0), obs=y)


def _first_column_model(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(w * x[:, 1], 1.0), obs=y)


def test_features_do_not_depend_on_memory_aliasing():
    table = torch.randn(6, 2)
    aliased = _read(_first_column_model, table, table[:, 0])
    copied = _read(_first_column_model, table, table[:, 0].clone())
    assert copied.features.shape == (1, 6, 3)
    torch.testing.assert_close(aliased.features, copied.features)


def test_subset_leaves_arguments_without_a_data_axis():
    x, y, scale = torch.randn(6), torch.randn(6), torch.tensor([2.0, 3.0])
    data = _read(_scaled_model, x, y, scale=scale[:1])
    batch = data.subset(torch.tensor([0, 4]))
    assert batch.kwargs["scale"] is data.kwargs["scale"]
    torch.testing.assert_close(batch.args[0], x[[0, 4]])


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_categorical_observations_are_one_hot(batched, make_family, dataset):
    family = make_family("dirichlet_categorical")
    x, y = dataset(family, 2, 9, batched, task=0)
    data = _read(family.model, x, y)
    expected = torch.nn.functional.one_hot(y.reshape(-1, 9), 4).float()
    torch.testing.assert_close(data.features, expected)


def test_featurize_overrides_the_features(linreg, simulate):
    _, x, y = simulate(linreg, 2, 7)

    def featurize(x, y):
        return torch.stack([y, y**2], dim=-1)

    data = _read(linreg.model, x, y, featurize=featurize)
    torch.testing.assert_close(data.features, torch.stack([y, y**2], dim=-1))
    single = _read(linreg.model, x[0], y[0], featurize=featurize)
    assert single.features.shape == (1, 7, 2)  # (N, F) gains the task dim


@pytest.mark.parametrize(
    "featurize",
    [lambda x, y: y.unsqueeze(-1)[:, :-1], lambda x, y: y, lambda x, y: y[:1].unsqueeze(-1)],
    ids=["too-few-points", "missing-feature-dim", "too-few-tasks"],
)
def test_featurize_shape_is_checked(featurize, linreg, simulate):
    _, x, y = simulate(linreg, 2, 7)
    with pytest.raises(ValueError, match=r"featurize must return.*\(2, 7\)"):
        _read(linreg.model, x, y, featurize=featurize)


@pytest.mark.parametrize(
    ("target", "value"),
    [("y", float("nan")), ("y", float("inf")), ("x", float("inf"))],
    ids=["nan-y", "inf-y", "inf-x"],
)
def test_non_finite_data_are_refused(target, value, linreg, simulate):
    _, x, y = simulate(linreg, 2, 7)
    data = {"x": x.clone(), "y": y.clone()}
    data[target][1, 3].view(-1)[0] = value  # one entry of one point
    with pytest.raises(ValueError, match="NaN or inf"):
        _read(linreg.model, data["x"], data["y"])


def test_missing_observations_are_refused(linreg, simulate):
    _, x, _ = simulate(linreg, 2, 7)
    with pytest.raises(ValueError, match="no observed site") as info:
        _read(linreg.model, x, None)
    assert "guide(x, y)" in str(info.value)
