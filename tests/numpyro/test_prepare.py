"""The NumPyro guide's ``prepare``: a call signature's layout and log joint are kept, and a
later call of that signature reads its data through one compiled call, with the same
values as the eager read and the same refusals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from iai_prob.numpyro import IterativeAmortizedGuide
from iai_prob.numpyro.task_data import call_signature, read_task_data


def _regression(x, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
    with numpyro.plate("data", x.shape[0]):
        return numpyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)


def _data(seed: int, num_points: int = 12):
    x = jax.random.normal(jax.random.PRNGKey(seed), (num_points, 2))
    return x, x @ jnp.array([1.0, -0.5]) + 0.1


def test_a_known_signature_is_read_by_one_compiled_call_with_the_eager_values():
    runs = []

    def counted(x, y=None):
        runs.append(type(x).__name__)
        return _regression(x, y)

    guide = IterativeAmortizedGuide(counted)
    first = guide.prepare(*_data(0))
    eager = len(runs)
    second = guide.prepare(*_data(1))  # compiles the reader: the model runs once, traced
    third = guide.prepare(*_data(2))
    assert len(runs) == eager + 1, runs  # the third call ran no Python model code
    reference, _, _ = read_task_data(counted, _data(2), {}, data_plate="data", tasks_plate="tasks")
    np.testing.assert_array_equal(third.data.features, reference.features)
    for got, expected in zip(
        jax.tree_util.tree_leaves((third.data.args, third.data.total_points)),
        jax.tree_util.tree_leaves((reference.args, reference.total_points)),
        strict=True,
    ):
        np.testing.assert_array_equal(got, expected)
    assert second.layout is first.layout and third.log_joint is first.log_joint
    x, y = _data(3)
    with pytest.raises(ValueError, match="NaN or inf"):
        guide.prepare(x, y.at[0].set(jnp.nan))
    assert guide.prepare(*_data(4, num_points=5)).data.size == 5  # another shape


def test_a_model_that_needs_concrete_values_is_read_eagerly():
    def branching(x, y=None):
        if y is not None and float(jnp.abs(y).max()) > 1e6:  # concrete values only
            raise ValueError("outlier")
        return _regression(x, y)

    guide = IterativeAmortizedGuide(branching)
    for seed in range(3):
        x, y = _data(seed)
        task = guide.prepare(x, y)
        np.testing.assert_array_equal(task.data.features[0, :, 0], y)
    with pytest.raises(ValueError, match="outlier"):
        guide.prepare(x, y.at[0].set(1e7))


def test_call_signatures():
    x = jnp.zeros((3, 2))
    assert call_signature((x,), {"k": 2}) == call_signature((x + 1,), {"k": 2})
    assert call_signature((x,), {"k": 2}) != call_signature((x,), {"k": 3})
    assert call_signature((x,), {}) != call_signature((jnp.zeros((4, 2)),), {})
    assert call_signature((np.zeros((3, 2), np.float32),), {}) == call_signature((x,), {})
    assert call_signature((x, [1, 2]), {}) is not None  # a list is a pytree of values
    assert call_signature((x, {1, 2}), {}) is None  # an unhashable leaf: not cached
