"""A streamed dataset's ``sample_stats``: ``log p(z_s, D)`` over every row, in any batching."""

import numpy as np
import pandas as pd
import pytest
import torch

from iai_prob.diagnostics import approximate_posterior
from iai_prob.diagnostics.adapter import log_joint_per_draw
from iai_prob.io import (
    Columns,
    Table,
    inference_data,
    minibatches,
    stream_log_joint,
    stream_posterior,
)

ROWS = 700


@pytest.fixture
def streamed(tmp_path, shipped_guide, x_columns):
    _, x, y = shipped_guide.family.sample(1, ROWS, generator=torch.Generator().manual_seed(2))
    frame = pd.DataFrame(x[0].numpy(), columns=x_columns).assign(y=y[0].numpy())
    frame.to_csv(tmp_path / "rows.csv", index=False)
    table = Table(tmp_path / "rows.csv", chunk_rows=97)
    columns = Columns.of(x_columns, "y", guide=shipped_guide)
    return table, columns, stream_posterior(shipped_guide, table, columns)


@pytest.mark.parametrize("rows_per_batch", [33, 64, 250, ROWS])
def test_stream_log_joint_is_the_log_joint_of_all_rows(shipped_guide, streamed, rows_per_batch):
    table, columns, result = streamed
    x, y = next(minibatches(table, columns, ROWS))
    task = shipped_guide.prepare(x, y)
    z = result.posterior.sample((50,)).unsqueeze(1)
    exact = log_joint_per_draw(task, z).double()
    got = stream_log_joint(shipped_guide, table, columns, z, max_elements=50 * rows_per_batch)
    assert got.shape == (50, 1) and got.dtype == torch.float64
    assert torch.allclose(got, exact, rtol=1e-6, atol=1e-3)


def test_a_dataset_too_large_to_hold_keeps_its_sample_stats(shipped_guide, streamed):
    table, columns, result = streamed
    held = inference_data(shipped_guide, result, table=table, columns=columns, num_samples=200)
    streamed_only = inference_data(
        shipped_guide, result, table=table, columns=columns, num_samples=200, max_rows_in_memory=300
    )
    assert set(streamed_only.groups()) == {"posterior", "sample_stats"}
    assert "log_likelihood" in held.groups()
    np.testing.assert_array_equal(streamed_only.posterior["w"], held.posterior["w"])
    for name in ("lp", "log_q", "log_importance_weight"):
        got, want = streamed_only.sample_stats[name], held.sample_stats[name]
        assert got.dims == want.dims == ("chain", "draw")
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-3)
    # not the statistics of the first rows alone
    x, y = next(minibatches(table, columns, 300))
    first = approximate_posterior(lambda *_: result.posterior, shipped_guide.model, x, y)
    lp_first = first.draw(200, seed=0).log_joint[:, 0].numpy()
    assert np.abs(lp_first - held.sample_stats["lp"].values[0]).min() > 100
