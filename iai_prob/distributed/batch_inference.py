"""Batch inference over many groups with Dask distributed: one posterior summary per group.

A table of rows ``(group, x_1 … x_d, y)`` stored as partitioned Parquet holds one small
dataset per group (per user, per sensor, per school). Each Dask partition is handled by
:func:`summarize_groups`, which runs the amortized guide ``q_φ(θ | D_g)`` on every group
``g`` of the partition in batches of tasks, as ``iai infer --group`` does
(:func:`iai_prob.io.grouped.size_batches`: groups of any sizes padded together for the
default answer, each group's answer the one it gets alone), so the cost is a few
vectorized solver steps per batch rather than one call per group. For every
scalar coordinate ``θ_j`` of every global site it writes the marginal posterior
quantiles (``q05``, the median ``q50``, ``q95``) in the model's constrained space and
the number of points.

Each worker process loads the guide once from its safetensors checkpoint (the model is
rebuilt from the card's task family), so nothing but file paths travels to the workers.
Groups must not straddle partitions (write the Parquet partitioned by group, or pass
``shuffle=True`` to let Dask co-locate each group's rows); a group found in two
partitions is reported with a ``ValueError`` before anything is written. The output
folder belongs to one run (:mod:`iai_prob.distributed.output_folder`): a rerun resumes
it, another run is refused unless ``overwrite=True``, and every computation runs on the
client the caller names. A group larger than the guide's
mini-batch is refined over its rows in a seeded order of their positions, so its
summary depends on the order of its rows (as ``guide.posterior`` does), not on the
other groups it is batched with.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from iai_prob.posterior_status import (
    PosteriorStatus,
    warn_if_unreliable,
)

__all__ = [
    "BatchInferenceResult",
    "run_batch_inference",
    "summarize_and_draw",
    "summarize_groups",
]

QUANTILES = (0.05, 0.5, 0.95)

# Pyro's effect-handler stack is global to a process, so two threads must not trace models
# at once: guide calls are serialized per process, and parallelism comes from worker
# processes (LocalCluster(processes=True, threads_per_worker=1), or many machines).
_PYRO_LOCK = threading.Lock()


class BatchInferenceResult(NamedTuple):
    """What :func:`run_batch_inference` did (``resumed_partitions``: partitions a
    resumed run found written and kept)."""

    num_groups: int
    num_rows: int
    seconds: float
    workers: int
    resumed_partitions: int = 0

    @property
    def groups_per_second(self) -> float:
        return self.num_groups / self.seconds


@functools.lru_cache(maxsize=4)
def _cached_guide(checkpoint: str, device: str):
    """The guide of ``checkpoint`` for its card's task family, loaded once per process
    (the card verified before anything is built, see
    :func:`~iai_prob.inference.guide.load_family_guide`)."""
    from iai_prob.inference.guide import load_family_guide

    return load_family_guide(checkpoint, device=device)


def _columns_for(layout, quantiles: Sequence[float]) -> list[str]:
    names = []
    for site in layout.sites:
        for index in np.ndindex(*site.event_shape):
            label = site.name + "".join(f"[{i}]" for i in index)
            names += [f"{label}_q{round(100 * q):02d}" for q in quantiles]
    return names


def _flatten(values: dict[str, torch.Tensor], layout, num_tasks: int) -> np.ndarray:
    """``{site: (Q, T, *event)}`` → ``(T, Σ_sites numel · Q)`` in :func:`_columns_for` order."""
    parts = []
    for site in layout.sites:
        value = values[site.name].reshape(values[site.name].shape[0], num_tasks, -1)
        parts.append(value.permute(1, 2, 0).reshape(num_tasks, -1))
    return torch.cat(parts, dim=-1).cpu().numpy()


def summarize_groups(frame: pd.DataFrame, **options) -> pd.DataFrame:
    """One row per group of ``frame``: ``group``, ``num_points``, the posterior quantiles
    and the group's convergence status (:func:`summarize_and_draw`'s summary; ``options``
    as there, without draws)."""
    return summarize_and_draw(frame, **options)[0]


def summarize_and_draw(
    frame: pd.DataFrame,
    *,
    checkpoint: str,
    group: str,
    x_columns: Sequence[str],
    y_column: str,
    quantiles: Sequence[float] = QUANTILES,
    max_tasks: int = 256,
    device: str = "cpu",
    threads: int = 1,
    num_samples: int = 0,
    seed: int = 0,
):
    """``(summary, idata)``: one row per group of ``frame`` (``group``, ``num_points``,
    posterior quantiles, then the status of :class:`~iai_prob.posterior_status.PosteriorStatus`)
    and, with ``num_samples``, the groups' ArviZ InferenceData as ``iai infer --group``
    writes it (``num_samples`` draws per group seeded by ``seed``, a ``group`` dimension
    whose coordinates are the groups, ``sample_stats`` with each group's status; ``None``
    without draws).

    :param frame: rows ``(group, *x_columns, y_column)``, each group complete.
    :param str checkpoint: the guide's checkpoint (path stem), for a task family.
    :param int max_tasks: at most this many groups per batched guide call.
    """
    missing = [c for c in (group, *x_columns, y_column) if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} not found; the table has {list(frame.columns)}")
    torch.set_num_threads(threads)
    with _PYRO_LOCK:
        guide, summary, result = _summarize(
            frame, checkpoint, group, x_columns, y_column, quantiles, max_tasks, device
        )
        if not num_samples:
            return summary, None
        from iai_prob.io.export import inference_data

        return summary, inference_data(guide, result, num_samples=num_samples, seed=seed)


def _summarize(frame, checkpoint, group, x_columns, y_column, quantiles, max_tasks, device):
    """``(guide, summary, grouped posterior)`` of :func:`summarize_and_draw` once its
    columns are checked (under the process lock)."""
    from iai_prob.io.grouped import GroupedData, posteriors_of_groups

    guide = _cached_guide(str(checkpoint), str(device))
    dtype = torch.get_default_dtype()
    codes, labels = pd.factorize(frame[group].to_numpy(), sort=True)
    data = GroupedData.of_rows(
        labels,
        codes,
        torch.tensor(frame[list(x_columns)].to_numpy(), dtype=dtype).to(device),
        torch.tensor(frame[y_column].to_numpy(), dtype=dtype).to(device),
    )
    # the summary's status columns say it, and the client warns naming the groups
    result = posteriors_of_groups(guide, data, max_tasks=max_tasks, warn=False)
    rows = []
    for start in range(0, len(labels), max_tasks):
        posterior = result.of(slice(start, start + max_tasks))
        values = guide.quantiles_of(posterior, result.layout, list(quantiles))
        rows.append(_flatten(values, result.layout, len(posterior.loc)))
    summary = pd.DataFrame(np.concatenate(rows), columns=_columns_for(result.layout, quantiles))
    summary.insert(0, "num_points", data.sizes.astype(np.int64))
    summary.insert(0, group, labels)
    if result.status is not None:
        for name, values in zip(PosteriorStatus._fields, result.status, strict=True):
            summary[name] = values
    return guide, summary, result


def run_batch_inference(
    source,
    destination,
    *,
    checkpoint,
    client,
    group: str = "group",
    x_columns: Sequence[str] | None = None,
    y_column: str = "y",
    quantiles: Sequence[float] = QUANTILES,
    max_tasks: int = 256,
    shuffle: bool = False,
    device: str = "cpu",
    overwrite: bool = False,
    blocksize: str | int = "64MB",
    num_samples: int = 0,
    seed: int = 0,
) -> BatchInferenceResult:
    """Summarize every group of the table ``source`` (Parquet or CSV) into Parquet
    ``destination``.

    Every step runs on ``client``'s cluster (not on whichever client was created last).
    Before anything is written, the grouping is checked (no group in two partitions) and
    the output folder is claimed for this run (:mod:`.output_folder`): an empty folder
    starts the run, this same run's folder resumes it without recomputing the
    partitions it holds, and anything else is refused unless ``overwrite``.

    :param source: a Parquet file, folder or glob, or CSV (a ``.csv`` file or glob, or a
        folder of them), read in partitions of about ``blocksize``: a Parquet file by its
        row groups (a small file is one partition; a large one is never read whole by one
        worker), a CSV file in blocks of bytes. A group that straddles two partitions is
        refused before anything is written: then pass ``shuffle=True``.
    :param destination: output folder (one Parquet file per input partition, and the
        run's manifest).
    :param checkpoint: the guide's checkpoint (path stem; the card names the task family).
    :param client: a ``dask.distributed.Client``; the work runs on its workers.
    :param x_columns: covariate columns (default: every column but ``group`` and ``y``).
    :param bool shuffle: co-locate each group's rows first (when files are not by group).
    :param str device: where each worker runs the guide (``"cuda"`` for GPU workers).
    :param bool overwrite: replace an output folder that holds another run (built beside
        it and swapped in when complete).
    :param blocksize: the size of a partition read (bytes, or text such as ``"64MB"``).
    :param int num_samples: also write each partition's posterior draws, this many per
        group, as an ArviZ InferenceData netCDF file beside its summaries
        (``part.00000.nc`` …, :func:`summarize_and_draw`; ``az.from_netcdf`` reads one,
        ``xarray.open_mfdataset(..., concat_dim="group", combine="nested")`` them all).
    :param int seed: seeds the draws.
    :raises ValueError: a group in two partitions (``shuffle=False``), or missing columns.
    :raises FileExistsError: ``destination`` holds something else and ``overwrite`` is off.
    :returns: a :class:`BatchInferenceResult` (groups, rows, wall time, workers).
    """
    import dask

    from iai_prob.distributed.output_folder import OutputFolder, run_identity

    frame = _read_table(source, blocksize)
    if group not in frame.columns or y_column not in frame.columns:
        raise ValueError(
            f"the table needs columns {group!r} and {y_column!r}; it has {list(frame.columns)}"
        )
    if x_columns is None:
        x_columns = [c for c in frame.columns if c not in (group, y_column)]
    if shuffle:
        frame = frame.shuffle(on=group)
    parts = frame.to_delayed()  # the check and the summaries read the same partitions
    if not shuffle:
        _check_grouping(parts, group, source, client)
    options = {
        "checkpoint": str(checkpoint),
        "group": group,
        "x_columns": list(x_columns),
        "y_column": y_column,
        "quantiles": tuple(quantiles),
        "max_tasks": max_tasks,
        "device": device,
        "num_samples": num_samples,
        "seed": seed,
    }
    settings = {**options, "shuffle": shuffle, "blocksize": blocksize}
    identity = run_identity(source, checkpoint, settings, len(parts))
    output = OutputFolder(destination, identity, overwrite=overwrite)
    started = time.perf_counter()
    finished = set(output.finished())
    summarize = dask.delayed(functools.partial(summarize_and_draw, **options))
    writes = [
        dask.delayed(_write_summary_and_draws)(summarize(part), str(output.path(index)))
        for index, part in enumerate(parts)
        if index not in finished
    ]
    try:
        counts = client.gather(client.compute(writes))
    except BaseException:
        output.abandon()
        raise
    counts += [_counts(output.path(index)) for index in sorted(finished)]
    output.complete()
    seconds = time.perf_counter() - started
    _warn_if_unreliable(output.path, len(parts), group, checkpoint)
    workers = len(client.scheduler_info()["workers"])
    return BatchInferenceResult(
        sum(c[0] for c in counts), sum(c[1] for c in counts), seconds, workers, len(finished)
    )


def _read_table(source, blocksize):
    """``source`` as a Dask frame in partitions of about ``blocksize``: CSV (a ``.csv``
    file or glob, or a folder of them) in blocks of bytes, Parquet (a file, folder or
    glob) by row groups, several small ones of a file together, never across files."""
    import dask.dataframe as dd

    text = str(source)
    if Path(text).is_dir() and any(Path(text).glob("*.csv")):
        text = str(Path(text) / "*.csv")
    if text.endswith(".csv"):
        return dd.read_csv(text, blocksize=blocksize)
    return dd.read_parquet(source, split_row_groups="adaptive", blocksize=blocksize)


def _check_grouping(parts, group: str, source, client) -> None:
    """Refuse, before anything is written, a group found in two of the partitions
    ``parts`` (delayed frames, computed on ``client``). They are the partitions the
    summaries read: reading the group column alone lets Dask fuse small files into one
    partition, where a split group would go unseen."""
    import dask

    uniques = [dask.delayed(_groups_of)(part, group) for part in parts]
    seen = pd.Series(np.concatenate(client.gather(client.compute(uniques))))
    duplicated = seen[seen.duplicated()].unique()
    if len(duplicated):
        raise ValueError(
            f"group(s) {list(duplicated[:5])} appear in more than one partition of {source}; "
            "write the Parquet partitioned by group or pass shuffle=True"
        )


def _groups_of(frame: pd.DataFrame, group: str) -> np.ndarray:
    """The distinct groups of one partition."""
    return pd.unique(frame[group])


def _write_summary_and_draws(summary_and_draws, path: str) -> tuple[int, int]:
    """Write a partition's draws (if any) to ``path`` with ``.nc``, then its summaries to
    ``path`` (last, whole: a partition counts as done once its summaries exist)."""
    from iai_prob.distributed.output_folder import write_partition

    summary, idata = summary_and_draws
    if idata is not None:
        target = Path(path).with_suffix(".nc")
        temporary = target.with_name(target.name + ".tmp")
        idata.to_netcdf(str(temporary))
        os.replace(temporary, target)
    return write_partition(summary, path)


def _warn_if_unreliable(path_of, num_parts: int, group: str, checkpoint) -> None:
    """The warnings ``iai infer --group`` gives, naming the groups of the written summaries
    that did not converge or whose ``k̂`` is high (read back from their status columns)."""
    import pyarrow.parquet as pq

    columns = [group, *PosteriorStatus._fields]
    if not set(columns) <= set(pq.read_schema(path_of(0)).names):
        return  # no status columns: the guide's convergence phase is off
    frame = pd.concat([pd.read_parquet(path_of(i), columns=columns) for i in range(num_parts)])
    status = PosteriorStatus(*(frame[name].to_numpy() for name in PosteriorStatus._fields))
    guide = _cached_guide(str(checkpoint), "cpu")
    names = frame[group].astype(str).to_numpy()
    warn_if_unreliable(status, max_steps=guide.convergence.max_steps, batched=True, names=names)


def _counts(path) -> tuple[int, int]:
    """``(groups, rows)`` of a partition written before (a resumed run)."""
    written = pd.read_parquet(path, columns=["num_points"])
    return len(written), int(written["num_points"].sum())
