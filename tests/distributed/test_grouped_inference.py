"""``iai infer --group ... --dask``: the workers compute the one-process path's batches, so
the file and the summary are the one-process run's."""

from __future__ import annotations

import socket

import arviz as az
import numpy as np
import pytest

from iai_prob.cli import main

pytest.importorskip("distributed")

SIZES = [5, 7, 12, 30, 5, 9, 14, 5, 61, 7, 12, 20]  # several padded sizes and batches


@pytest.mark.slow
def test_dask_workers_write_the_one_process_file_and_summary(
    tmp_path, capsys, make_grouped_frame, shipped_guide
):
    make_grouped_frame(shipped_guide.family, SIZES, seed=4).to_csv(tmp_path / "d.csv", index=False)
    argv = ["infer", "linear_regression", str(tmp_path / "d.csv"), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "unit", "--num-samples", "40", "--max-tasks", "2", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "one.nc")]) == 0
    one = capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "dask.nc"), "--dask", "local:2"]) == 0
    dask = capsys.readouterr()

    assert "posteriors and draws on 2 Dask worker(s)" in dask.err
    assert dask.out == one.out  # the summary tables: the same groups, statistics, statuses
    expected, got = (az.from_netcdf(tmp_path / f"{n}.nc") for n in ("one", "dask"))
    for group in ("posterior", "sample_stats"):
        assert set(got[group].data_vars) == set(expected[group].data_vars)
        assert list(got[group]["group"].values) == list(expected[group]["group"].values)
        for name in expected[group].data_vars:
            np.testing.assert_allclose(
                got[group][name].values, expected[group][name].values, rtol=1e-4, atol=1e-4
            )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--dask", "local:2"], "--dask runs the grouped path: give --group COL"),
        (["--group", "unit", "--dask", "local:0"], "--dask local:N needs a positive number"),
    ],
)
def test_bad_dask_options_are_one_line(
    tmp_path, capsys, make_grouped_frame, shipped_guide, options, message
):
    make_grouped_frame(shipped_guide.family, [5, 6]).to_csv(tmp_path / "d.csv", index=False)
    argv = ["infer", "linear_regression", str(tmp_path / "d.csv"), "--x", "x0:x7", "--y", "y"]
    assert main([*argv, "--out", str(tmp_path / "o.nc"), "--no-progress", *options]) == 2
    assert message in capsys.readouterr().err


def test_a_scheduler_that_does_not_answer_is_one_line(
    tmp_path, capsys, monkeypatch, make_grouped_frame, shipped_guide
):
    from iai_prob.distributed import grouped_inference

    monkeypatch.setattr(grouped_inference, "SCHEDULER_TIMEOUT", 1)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    make_grouped_frame(shipped_guide.family, [5, 6]).to_csv(tmp_path / "d.csv", index=False)
    argv = ["infer", "linear_regression", str(tmp_path / "d.csv"), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "unit", "--dask", f"tcp://127.0.0.1:{port}", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "o.nc")]) == 2
    assert f"--dask: no Dask scheduler answered at 'tcp://127.0.0.1:{port}'" in (
        capsys.readouterr().err
    )
