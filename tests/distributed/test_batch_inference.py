"""Batch inference with Dask distributed: partitioned Parquet in, one posterior summary
per group out, on a local 2-worker cluster; every row equals the guide called on that
group alone."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest
import torch

from iai_prob.distributed.batch_inference import run_batch_inference, summarize_groups
from iai_prob.inference import IterativeAmortizedGuide
from iai_prob.models import LinearRegression
from iai_prob.posterior_status import PosteriorWarning

ROOT = Path(__file__).resolve().parents[2]
SIZES = (5, 9, 9, 14)  # group sizes cycle through these: buckets of equal N


@pytest.fixture(scope="module")
def family():
    return LinearRegression(dim=2, noise_scale=0.5)


@pytest.fixture(scope="module")
def checkpoint(family, tmp_path_factory):
    torch.manual_seed(0)
    guide = IterativeAmortizedGuide(
        family,
        encoder="deep_sets",
        encoder_options={"embed_dim": 16, "hidden_dim": 32},
        batch_size=8,
    )
    _, x, y = family.sample(1, 8, generator=torch.Generator().manual_seed(0))
    guide(x[0], y[0])
    with torch.no_grad():  # weights away from their (zero) initial head
        for parameter in guide.refiner.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    path = tmp_path_factory.mktemp("guide") / "guide"
    guide.save(path)
    return path


def _groups(family, num_groups, seed=0):
    frames = []
    for g in range(num_groups):
        size = SIZES[g % len(SIZES)]
        _, x, y = family.sample(1, size, generator=torch.Generator().manual_seed(seed + g))
        frames.append(
            pd.DataFrame({"group": f"g{g:04d}", "x0": x[0, :, 0], "x1": x[0, :, 1], "y": y[0]})
        )
    return pd.concat(frames, ignore_index=True)


QUANTILE_COLUMNS = [f"w[{i}]_q{q}" for i in range(2) for q in ("05", "50", "95")]


def _tensors(frame):
    x = torch.tensor(frame[["x0", "x1"]].to_numpy(), dtype=torch.float32)
    return x, torch.tensor(frame["y"].to_numpy(), dtype=torch.float32)


def _assert_rows_are_the_guide_alone(summary, frame, guide, indices):
    """Rows ``indices`` of ``summary`` (ordered, indexed from 0) hold the quantiles the
    guide gives each group alone."""
    for index in indices:
        rows = frame[frame["group"] == summary.loc[index, "group"]]
        np.testing.assert_allclose(
            summary.loc[index, QUANTILE_COLUMNS].to_numpy(dtype=np.float32),
            _expected_row(guide, rows),
            rtol=1e-4,
            atol=1e-5,
        )


def _expected_row(guide, frame):
    values = guide.quantiles([0.05, 0.5, 0.95], *_tensors(frame))["w"]  # (3, 2)
    return values.T.reshape(-1).numpy()  # w[0]_q05, w[0]_q50, w[0]_q95, w[1]_…


def test_each_summary_row_is_the_guide_on_that_group_alone(family, checkpoint):
    frame = _groups(family, 12).sample(frac=1.0, random_state=0)  # rows in any order
    summary = summarize_groups(
        frame,
        checkpoint=str(checkpoint),
        group="group",
        x_columns=["x0", "x1"],
        y_column="y",
        max_tasks=2,  # several chunks per bucket
    )
    status = ["converged", "passes", "full_steps", "residual", "khat"]
    assert list(summary.columns) == ["group", "num_points", *QUANTILE_COLUMNS, *status]
    assert list(summary["group"]) == sorted(frame["group"].unique())
    guide = IterativeAmortizedGuide.load(checkpoint, family)
    for _, row in summary.iterrows():
        rows = frame[frame["group"] == row["group"]]
        assert row["num_points"] == len(rows)
        np.testing.assert_allclose(
            row[QUANTILE_COLUMNS].to_numpy(dtype=np.float32),
            _expected_row(guide, rows),
            rtol=1e-4,
            atol=1e-5,
        )
        alone = guide.posterior(*_tensors(rows)).status
        assert (row["converged"], row["passes"]) == (alone.converged, alone.passes)
        assert row["khat"] == pytest.approx(float(alone.khat), abs=1e-4)


def test_missing_columns_are_named(family, checkpoint):
    frame = _groups(family, 2)
    with pytest.raises(ValueError, match=r"columns \['x2'\] not found"):
        summarize_groups(
            frame, checkpoint=str(checkpoint), group="group", x_columns=["x0", "x2"], y_column="y"
        )


@pytest.mark.slow
def test_partitioned_parquet_on_a_two_worker_cluster(family, checkpoint, tmp_path):
    distributed = pytest.importorskip("distributed")
    frame = _groups(family, 40)
    source = tmp_path / "in"
    source.mkdir()
    for part, groups in enumerate(np.array_split(sorted(frame["group"].unique()), 4)):
        frame[frame["group"].isin(groups)].to_parquet(source / f"part-{part}.parquet")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        result = run_batch_inference(
            source, tmp_path / "out", checkpoint=checkpoint, client=client, group="group"
        )
        assert result.workers == 2
        # the client names the groups the written statuses flag (here edited into a
        # finished run, which the rerun resumes without recomputing)
        first = tmp_path / "out" / "part.00000.parquet"
        edited = pd.read_parquet(first)
        assert edited["converged"].all() and (edited["khat"] <= 0.7).all()
        edited.loc[0, "converged"], edited.loc[1, "khat"] = False, 0.93
        edited.to_parquet(first, index=False)
        with pytest.warns(PosteriorWarning) as caught:
            again = run_batch_inference(
                source, tmp_path / "out", checkpoint=checkpoint, client=client, group="group"
            )
        assert again.resumed_partitions == 4
        messages = [str(w.message) for w in caught if w.category is PosteriorWarning]
        assert any(edited.loc[0, "group"] in m and "did not converge" in m for m in messages)
        assert any(edited.loc[1, "group"] in m and "k̂ up to 0.93" in m for m in messages)
        # groups split across files are detected
        frame.iloc[::2].to_parquet(tmp_path / "split-a.parquet")
        frame.iloc[1::2].to_parquet(tmp_path / "split-b.parquet")
        with pytest.raises(ValueError, match="more than one partition"):
            run_batch_inference(
                str(tmp_path / "split-*.parquet"),
                tmp_path / "bad",
                checkpoint=checkpoint,
                client=client,
            )
        assert not (tmp_path / "bad").exists()  # refused before anything was written
        shuffled = run_batch_inference(
            str(tmp_path / "split-*.parquet"),
            tmp_path / "shuffled",
            checkpoint=checkpoint,
            client=client,
            shuffle=True,
        )
    assert (result.num_groups, result.num_rows) == (40, len(frame))
    assert shuffled.num_groups == 40
    summary = pd.read_parquet(tmp_path / "out").sort_values("group").reset_index(drop=True)
    assert len(summary) == 40 and summary["group"].is_unique
    again = pd.read_parquet(tmp_path / "shuffled").sort_values("group").reset_index(drop=True)
    # the shuffle reorders rows within a group, and a group larger than the guide's
    # mini-batch is refined in a (seeded) order of its rows: same groups and sizes
    pd.testing.assert_frame_equal(summary.iloc[:, :2], again.iloc[:, :2], check_dtype=False)
    guide = IterativeAmortizedGuide.load(checkpoint, family)
    _assert_rows_are_the_guide_alone(summary, frame, guide, (0, 17, 39))


def _write_parts(frame, folder, num_parts):
    folder.mkdir()
    for part, groups in enumerate(np.array_split(sorted(frame["group"].unique()), num_parts)):
        frame[frame["group"].isin(groups)].to_parquet(folder / f"part-{part}.parquet")


@pytest.mark.slow
def test_an_output_folder_holds_one_run_and_the_named_client_does_the_work(
    family, checkpoint, tmp_path
):
    """Issue 23: a folder holding another run is refused (then replaced only when asked),
    a rerun of the same run resumes without recomputing what it wrote, and the client
    passed in runs every task even when another client was created after it; the
    workers are processes, as in production."""
    distributed = pytest.importorskip("distributed")
    small, large = _groups(family, 10, seed=100), _groups(family, 30, seed=200)
    _write_parts(small, tmp_path / "small", 2)
    _write_parts(large, tmp_path / "large", 3)
    out = tmp_path / "out"
    options = {"checkpoint": checkpoint, "group": "group"}
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as named_cluster,
        distributed.Client(named_cluster) as named,
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as later_cluster,
        distributed.Client(later_cluster) as later,  # now Dask's default client
    ):
        with (
            distributed.get_task_stream(client=named) as on_named,
            distributed.get_task_stream(client=later) as on_later,
        ):
            first = run_batch_inference(tmp_path / "large", out, client=named, **options)
        assert len(on_named.data) > 0 and len(on_later.data) == 0
        assert (first.num_groups, first.workers, first.resumed_partitions) == (30, 2, 0)
        written = {p.name: p.stat().st_mtime_ns for p in out.glob("part.*.parquet")}
        assert len(written) == 3

        # another input into the same folder: refused in one line, the folder untouched
        with pytest.raises(FileExistsError, match="overwrite=True"):
            run_batch_inference(tmp_path / "small", out, client=named, **options)
        assert {p.name: p.stat().st_mtime_ns for p in out.glob("part.*.parquet")} == written

        # the same run again, after losing one partition: only that one is computed
        (out / "part.00001.parquet").unlink()
        again = run_batch_inference(tmp_path / "large", out, client=named, **options)
        assert (again.num_groups, again.num_rows, again.resumed_partitions) == (
            30,
            len(large),
            2,
        )
        for name in ("part.00000.parquet", "part.00002.parquet"):
            assert (out / name).stat().st_mtime_ns == written[name]

        # replacing it on purpose leaves exactly the new run, nothing stale
        replaced = run_batch_inference(
            tmp_path / "small", out, client=named, overwrite=True, **options
        )
    assert replaced.num_groups == 10
    summary = pd.read_parquet(out)
    assert sorted(summary["group"]) == sorted(small["group"].unique())
    assert sorted(p.name for p in out.iterdir()) == [
        "_iai_run.json",
        "part.00000.parquet",
        "part.00001.parquet",
    ]
    assert not list(tmp_path.glob("out.iai-*"))


@pytest.mark.slow
def test_csv_files_give_the_summaries_of_the_same_groups_in_parquet(family, checkpoint, tmp_path):
    """A folder of CSV files of whole groups is read as the Parquet one is."""
    distributed = pytest.importorskip("distributed")
    frame = _groups(family, 12, seed=300)
    (tmp_path / "csv").mkdir()
    for part, groups in enumerate(np.array_split(sorted(frame["group"].unique()), 2)):
        frame[frame["group"].isin(groups)].to_csv(
            tmp_path / "csv" / f"part-{part}.csv", index=False
        )
    _write_parts(frame, tmp_path / "parquet", 2)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        for name in ("csv", "parquet"):
            result = run_batch_inference(
                tmp_path / name, tmp_path / f"out-{name}", checkpoint=checkpoint, client=client
            )
            assert (result.num_groups, result.num_rows) == (12, len(frame))
    summaries = [
        pd.read_parquet(tmp_path / f"out-{name}").sort_values("group").reset_index(drop=True)
        for name in ("csv", "parquet")
    ]
    pd.testing.assert_frame_equal(*summaries, check_dtype=False, rtol=1e-5)


def test_a_folder_of_other_files_is_refused_before_anything_runs(family, checkpoint, tmp_path):
    from iai_prob.distributed.output_folder import OutputFolder, run_identity

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    identity = run_identity(tmp_path / "none.parquet", checkpoint, {"group": "group"}, 2)
    with pytest.raises(FileExistsError, match="is not empty"):
        OutputFolder(out, identity)
    assert (out / "notes.txt").read_text() == "mine"
    # a replacement that fails before completing leaves the old folder whole, no sibling
    replacement = OutputFolder(out, identity, overwrite=True)
    assert replacement.folder != out and replacement.folder.exists()
    replacement.abandon()
    assert not replacement.folder.exists() and (out / "notes.txt").read_text() == "mine"


@contextmanager
def _scheduler_and_workers(num_workers: int):
    """The documented cluster recipe on this machine: ``dask scheduler`` and ``dask
    worker`` started as processes of their own (as on the machines of a cluster), meeting
    over the loopback interface; yields a client of the scheduler and the workers'
    processes."""
    distributed = pytest.importorskip("distributed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    quiet = {"env": environment, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    dask = [sys.executable, "-m", "dask"]
    scheduler = subprocess.Popen(
        [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        **quiet,
    )
    workers = [
        subprocess.Popen(
            [*dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"],
            **quiet,
        )
        for _ in range(num_workers)
    ]
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(num_workers, timeout=120)
            yield client, workers
    finally:
        for process in [*workers, scheduler]:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_workers_started_apart_give_the_groups_and_a_killed_one_loses_nothing(
    family, checkpoint, tmp_path
):
    """Issue 23.6 and 23.7: the scheduler-plus-workers recipe of docs/reliability.md, and
    a worker killed by pid mid-run (SIGKILL, no nanny to restart it): Dask recomputes
    what it held on the other worker, and every group's summary is the guide on that
    group alone."""
    frame = _groups(family, 96, seed=300)
    _write_parts(frame, tmp_path / "in", 12)
    options = {"checkpoint": checkpoint, "group": "group"}
    guide = IterativeAmortizedGuide.load(checkpoint, family)
    with _scheduler_and_workers(2) as (client, workers):
        running = concurrent.futures.ThreadPoolExecutor(1).submit(
            run_batch_inference, tmp_path / "in", tmp_path / "out", client=client, **options
        )
        deadline = time.monotonic() + 120
        while not list((tmp_path / "out").glob("part.*.parquet")) and not running.done():
            assert time.monotonic() < deadline, "no partition was written in 2 minutes"
            time.sleep(0.01)
        written_before_the_kill = len(list((tmp_path / "out").glob("part.*.parquet")))
        workers[0].send_signal(signal.SIGKILL)
        result = running.result(timeout=300)
    assert 1 <= written_before_the_kill < 12  # killed mid-run
    assert (result.num_groups, result.num_rows) == (96, len(frame))
    summary = pd.read_parquet(tmp_path / "out").sort_values("group").reset_index(drop=True)
    assert summary["group"].tolist() == sorted(frame["group"].unique())
    _assert_rows_are_the_guide_alone(summary, frame, guide, (0, 41, 95))


def test_one_large_parquet_file_is_read_by_its_row_groups(family, checkpoint, tmp_path):
    """Issue 23.4: a Parquet file past ``blocksize`` is split into partitions by its row
    groups (it was one partition, read whole by one worker, at any size)."""
    distributed = pytest.importorskip("distributed")
    frame = _groups(family, 48, seed=500)  # sizes cycle 5, 9, 9, 14: 4 groups are 37 rows
    frame.to_parquet(tmp_path / "one.parquet", row_group_size=37 * 3)  # 4 row groups
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        options = {"checkpoint": checkpoint, "client": client, "group": "group"}
        result = run_batch_inference(
            tmp_path / "one.parquet", tmp_path / "out", blocksize=4096, **options
        )
        # with draws: an InferenceData file per partition, and the same run resumes
        draws = {"blocksize": 4096, "num_samples": 20, **options}
        run_batch_inference(tmp_path / "one.parquet", tmp_path / "draws", **draws)
        again = run_batch_inference(tmp_path / "one.parquet", tmp_path / "draws", **draws)
    assert again.resumed_partitions == 4
    assert (result.num_groups, result.num_rows) == (48, len(frame))
    assert len(list((tmp_path / "out").glob("part.*.parquet"))) == 4
    for part in sorted((tmp_path / "draws").glob("part.*.parquet")):
        rows = pd.read_parquet(part)
        idata = az.from_netcdf(part.with_suffix(".nc"))
        assert list(idata.posterior["group"].values) == list(rows["group"])
        assert idata.posterior["w"].shape == (1, 20, len(rows), 2)
        np.testing.assert_array_equal(idata.sample_stats["converged"], rows["converged"])
        np.testing.assert_allclose(idata.sample_stats["khat"], rows["khat"])
    summary = pd.read_parquet(tmp_path / "out").sort_values("group").reset_index(drop=True)
    guide = IterativeAmortizedGuide.load(checkpoint, family)
    _assert_rows_are_the_guide_alone(summary, frame, guide, (0, 23, 47))
