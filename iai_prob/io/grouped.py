"""Many small datasets in one table: one posterior per group, groups batched as tasks.

A group column splits the rows into datasets ``D_1 … D_G``. The guide handles a batch
of tasks through the model's outer ``"tasks"`` plate, so groups are stacked into
``(T, N, d)`` tensors and get their posteriors ``q(θ | D_g)`` in one call, at a
fraction of the cost of a Python loop over groups:

* by default (the guide's default answer) groups of unequal sizes share a call as a
  padded batch (:meth:`~iai_prob.inference.IterativeAmortizedGuide.padded_posterior`):
  each group is padded to the next of the sizes ``⌈1.25^k⌉`` (:func:`padded_size`, at
  most 25 % padding), so groups of 5 to 500 rows take 22 padded sizes, and each
  padded size is one traced (and, when met often, compiled) log joint instead of one
  per row count;
* with ``passes`` (learned mini-batch passes before the convergence phase) groups of
  equal size ``N`` share a call, with the same mini-batch schedule.

Either way each group's posterior is the one it gets alone (same initial context,
same steps; tested). A model without a tasks plate falls back to one call per group.

Group keys are the file's text (:meth:`~iai_prob.io.tables.Table.chunks` with
``text=``): ``"007"`` and ``"7"``, or ``"01"``, ``"1"`` and ``"1.0"``, are different
groups, and the groups do not depend on ``chunk_rows``; ``NA``, ``None`` or ``null`` in a
CSV is a key like any other (as in a Parquet file), only an empty cell is missing. Keys
are kept verbatim (the ``group`` coordinates of the InferenceData) in natural order:
runs of digits compare as numbers (``s2`` before ``s10``), equal numbers by their text
(``01`` before ``1``).

Every group's posterior comes from the guide's convergence phase
(:mod:`iai_prob.inference.convergence`); the result's ``status`` holds converged,
passes and PSIS ``k̂`` per group, and one
:class:`~iai_prob.posterior_status.PosteriorWarning` names the groups (by
key) that did not converge or have ``k̂ > 0.7``.

Memory: the selected columns are read chunk by chunk but all rows are kept, as float32
(4 bytes per value, twice that while the rows are sorted by group, plus the group keys:
10 million rows of 9 columns take 360 MB) because a group may be spread over the
whole file. One dataset larger than memory streams with
:func:`~iai_prob.io.streaming.stream_posterior` instead.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from typing import NamedTuple

import numpy as np
import torch
from pyro import poutine
from tqdm.auto import tqdm

from iai_prob.io.columns import Columns
from iai_prob.io.tables import Table
from iai_prob.posterior_status import (
    PosteriorNotice,
    PosteriorStatus,
    PosteriorWarning,
    warn_if_unreliable,
)

__all__ = [
    "PADDING_GROWTH",
    "GroupedData",
    "GroupedPosterior",
    "grouped_posteriors",
    "padded_batches",
    "padded_size",
    "posteriors_of_groups",
    "read_groups",
    "size_batches",
    "task_batches",
]

PADDING_GROWTH = 1.25
"""Padded sizes grow by this factor: a group of ``N`` rows is padded to the smallest
``⌈PADDING_GROWTH^k⌉ ≥ N`` (:func:`padded_size`)."""


def padded_size(num_rows: int) -> int:
    """The padded size of a group of ``num_rows`` rows: the smallest ``⌈1.25^k⌉ ≥ num_rows``
    (so at most a quarter of a padded batch is padding, and sizes from 5 to 500 rows
    share 22 padded sizes)."""
    power = 0
    while math.ceil(PADDING_GROWTH**power) < num_rows:
        power += 1
    return math.ceil(PADDING_GROWTH**power)


class GroupedData(NamedTuple):
    """The rows of a table split by group.

    :ivar keys: ``(G,)`` group keys, the file's text, in natural order.
    :ivar x: ``(R, d)`` covariates of all rows, sorted by group.
    :ivar y: ``(R,)`` or ``(R, k)`` observations, sorted like ``x``.
    :ivar starts: ``(G,)`` first row of each group in ``x`` and ``y``.
    :ivar sizes: ``(G,)`` rows per group.
    """

    keys: np.ndarray
    x: torch.Tensor
    y: torch.Tensor
    starts: np.ndarray
    sizes: np.ndarray

    @classmethod
    def of_rows(cls, keys: np.ndarray, inverse: np.ndarray, x, y) -> GroupedData:
        """The rows ``x, y`` (first axis) of groups ``keys``, row ``r`` in group
        ``keys[inverse[r]]``, sorted by group (stably: each group keeps its rows' order)."""
        order = torch.as_tensor(np.argsort(inverse, kind="stable"))
        sizes = np.bincount(inverse, minlength=len(keys))
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return cls(keys, x[order], y[order], starts, sizes)

    def group(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of group ``index``."""
        rows = slice(int(self.starts[index]), int(self.starts[index] + self.sizes[index]))
        return self.x[rows], self.y[rows]

    def select(self, indices: np.ndarray) -> GroupedData:
        """The groups ``indices`` alone, in that order (their rows copied)."""
        rows = [np.arange(self.starts[i], self.starts[i] + self.sizes[i]) for i in indices]
        order = torch.as_tensor(np.concatenate(rows) if rows else np.zeros(0, dtype=int))
        sizes = self.sizes[indices]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(self.starts.dtype)
        return GroupedData(self.keys[indices], self.x[order], self.y[order], starts, sizes)

    def stack(self, indices: np.ndarray, size: int | None = None):
        """``(x, y)`` of groups ``indices`` stacked as ``(T, N, …)``: of equal sizes ``N``,
        or padded to ``size`` rows by repeating each group's first row."""
        lengths = torch.as_tensor(self.sizes[indices])
        size = int(lengths[0]) if size is None else size
        offsets = torch.arange(size)
        offsets = torch.where(offsets < lengths[:, None], offsets, 0)
        rows = torch.as_tensor(self.starts[indices])[:, None] + offsets
        return self.x[rows], self.y[rows]


class GroupedPosterior(NamedTuple):
    """One posterior per group.

    :ivar keys: ``(G,)`` group keys (the file's text).
    :ivar sizes: ``(G,)`` rows per group.
    :ivar posterior: ``MultivariateNormal`` with batch shape ``(G,)`` over the joint
        unconstrained latents ``z``.
    :ivar layout: maps ``z`` to the model's sites
        (:class:`~iai_prob.latent_layout.LatentLayout`).
    :ivar read_seconds: time to read and split the table.
    :ivar seconds: time to compute the posteriors.
    :ivar batched: whether groups went through the tasks plate (else one call each).
    :ivar data: the rows, split by group (:class:`GroupedData`).
    :ivar status: converged, passes and ``k̂`` per group ``(G,)``
        (:class:`~iai_prob.posterior_status.PosteriorStatus`), or ``None`` when
        the guide's convergence phase is off.
    :ivar padded: whether groups of unequal sizes shared padded batches
        (:func:`size_batches`; the export and the spread check batch them alike).
    """

    keys: np.ndarray
    sizes: np.ndarray
    posterior: torch.distributions.MultivariateNormal
    layout: object
    read_seconds: float
    seconds: float
    batched: bool
    data: GroupedData
    status: PosteriorStatus | None = None
    padded: bool = False

    def of(self, groups) -> torch.distributions.MultivariateNormal:
        """The posteriors of the groups ``groups`` (indices or a slice), batch ``(len,)``."""
        posterior = self.posterior
        return torch.distributions.MultivariateNormal(
            posterior.loc[groups], scale_tril=posterior.scale_tril[groups]
        )

    @property
    def groups_per_second(self) -> float:
        """Groups per second of inference (reading excluded)."""
        return len(self.keys) / max(self.seconds, 1e-12)


def _natural(key: str) -> tuple:
    """Sort key: digit runs (odd places of the split) as numbers, then as text."""
    parts = re.split(r"([0-9]+)", key)
    return tuple((int(part), part) if place % 2 else part for place, part in enumerate(parts))


def _split_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``keys`` in natural order and each row's index into them."""
    unique, inverse = np.unique(keys, return_inverse=True)
    order = np.array(sorted(range(len(unique)), key=lambda i: _natural(unique[i])), dtype=int)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return unique[order], rank[inverse.reshape(-1)]


def read_groups(table: Table, columns: Columns, group: str) -> GroupedData:
    """Read the ``columns`` and the ``group`` column of ``table`` and split rows by group.

    The group column is read as text (see the module docstring); a missing key (an empty
    CSV cell, a Parquet null or NaN) is a ``ValueError`` naming its data row.
    """
    table.require([group], option="group")
    table.require(columns.names, option="columns")
    keys, xs, ys, seen = [], [], [], 0
    for frame in table.chunks([group, *columns.names], text=[group]):
        missing = frame[group].isna().to_numpy()
        if missing.any():
            raise ValueError(
                f"group column {group!r} of {table.path.name} has a missing value in data row "
                f"{seen + int(missing.argmax()) + 1} (an empty cell or a null); "
                "every row needs a group"
            )
        keys.append(frame[group].to_numpy(dtype=str))
        x, y = columns.tensors(frame, source=table.path.name)
        xs.append(x)
        ys.append(y)
        seen += len(frame)
    unique, inverse = _split_keys(np.concatenate(keys))
    return GroupedData.of_rows(unique, inverse, torch.cat(xs), torch.cat(ys))


def _supports_task_batch(guide, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether the guide's model runs a batch of tasks under its tasks plate."""
    plate = guide.config["tasks_plate"]
    try:
        with poutine.block(), torch.no_grad():
            trace = poutine.trace(guide.model).get_trace(x, y)
    except Exception:  # a model written for one dataset fails on (T, N, d) inputs
        return False
    return any(
        frame.name == plate and frame.size == len(x)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
    )


def _scale_tril(posterior) -> torch.Tensor:
    if isinstance(posterior, torch.distributions.Independent):
        return torch.diag_embed(posterior.base_dist.scale)
    if isinstance(posterior, torch.distributions.LowRankMultivariateNormal):
        return torch.linalg.cholesky(posterior.covariance_matrix)
    return posterior.scale_tril


def _answer(guide, *data, passes: int | None):
    """The guide's answer for ``data``: its default one or, with ``passes``,
    :meth:`refine`'s."""
    if passes is not None:
        return guide.refine(*data, passes=passes)
    return guide.posterior(*data)


def padded_batches(guide, passes: int | None = None) -> bool:
    """Whether groups of unequal sizes share padded batches: for the guide's default
    answer (no learned ``passes``, a convergence phase; :func:`size_batches`)."""
    return passes is None and guide.convergence is not None


def size_batches(sizes: np.ndarray, max_tasks: int, padded: bool):
    """Yield ``(indices, rows)``: batches of at most ``max_tasks`` groups, of one padded size
    ``rows`` (:func:`padded_size`) when ``padded``, else of one size (``rows=None``)."""
    keys = np.array([padded_size(int(n)) for n in sizes]) if padded else sizes
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        for start in range(0, len(members), max_tasks):
            yield members[start : start + max_tasks], int(key) if padded else None


def task_batches(
    guide, data: GroupedData, *, max_tasks: int = 256, passes: int | None = None
) -> tuple[list[np.ndarray], bool, bool]:
    """``(batches, batched, padded)``: the groups' indices in the batches the guide takes
    them in (:func:`size_batches`, or one group each for a model without a tasks plate),
    whether they go through the tasks plate, and whether unequal sizes share padded
    batches."""
    batched = _supports_task_batch(guide, *data.stack(np.array([0, 0])))
    padded = batched and padded_batches(guide, passes)
    if not batched:
        return [np.array([index]) for index in range(len(data.keys))], False, False
    return [chunk for chunk, _ in size_batches(data.sizes, max_tasks, padded)], True, padded


def _batched_answers(guide, data: GroupedData, max_tasks: int, passes: int | None, padded):
    """Yield ``(indices, posterior)`` for the batches of :func:`size_batches`: padded for
    the default answer; of one size with ``passes`` (learned mini-batch steps share one
    schedule) or without a convergence phase (whose answer is the learned steps')."""
    for chunk, rows in size_batches(data.sizes, max_tasks, padded):
        if rows is None:
            yield chunk, _answer(guide, *data.stack(chunk), passes=passes)
        else:
            sizes = torch.as_tensor(data.sizes[chunk])
            yield chunk, guide.padded_posterior(*data.stack(chunk, rows), sizes=sizes)


def grouped_posteriors(
    guide,
    table: Table,
    columns: Columns,
    *,
    group: str,
    max_tasks: int = 256,
    passes: int | None = None,
    progress: bool = False,
) -> GroupedPosterior:
    """``q(θ | D_g)`` for every group ``g`` of ``table`` (see the module docstring).

    :param guide: a trained :class:`~iai_prob.inference.IterativeAmortizedGuide`.
    :param table: the data (:class:`~iai_prob.io.tables.Table`).
    :param columns: which columns are ``x`` and ``y`` (:class:`~iai_prob.io.columns.Columns`).
    :param str group: the column whose values name the datasets.
    :param int max_tasks: at most this many groups per call of the guide.
    :param passes: ``None`` (default) for the guide's default answer, groups of all sizes
        padded together; else learned refinement passes over each group's rows before
        the convergence phase (``guide.refine``), groups of equal size together.
    :param bool progress: show a progress bar over groups.
    """
    if int(max_tasks) != max_tasks or max_tasks < 1:
        raise ValueError(f"max_tasks must be a positive integer, got {max_tasks!r}")
    started = time.perf_counter()
    data = read_groups(table, columns, group)
    read_seconds = time.perf_counter() - started
    result = posteriors_of_groups(
        guide, data, max_tasks=max_tasks, passes=passes, progress=progress
    )
    return result._replace(read_seconds=read_seconds)


def posteriors_of_groups(
    guide,
    data: GroupedData,
    *,
    max_tasks: int = 256,
    passes: int | None = None,
    progress: bool = False,
    warn: bool = True,
) -> GroupedPosterior:
    """``q(θ | D_g)`` for every group of rows already split (:class:`GroupedData`; as
    :func:`grouped_posteriors`, which reads them from a table first, and as each
    partition of a Dask run, :mod:`iai_prob.distributed.batch_inference`). Groups that
    did not converge or whose ``k̂ > 0.7`` are named, by key, in one warning
    (``warn=False``: none, the caller reports the statuses itself)."""
    started = time.perf_counter()
    layout = guide.prepare(*data.group(0)).layout
    locs = [None] * len(data.keys)
    trils = [None] * len(data.keys)
    statuses = [None] * len(data.keys)
    _, batched, padded = task_batches(guide, data, max_tasks=max_tasks, passes=passes)
    bar = tqdm(total=len(data.keys), disable=not progress, desc="groups", unit="group")
    with warnings.catch_warnings():
        # a call's warning would name its tasks by position; one warning below names keys
        warnings.simplefilter("ignore", PosteriorWarning)
        warnings.simplefilter("ignore", PosteriorNotice)
        if batched:
            for chunk, posterior in _batched_answers(guide, data, max_tasks, passes, padded):
                for position, (index, loc, tril) in enumerate(
                    zip(chunk, posterior.mean, _scale_tril(posterior), strict=True)
                ):
                    locs[index], trils[index] = loc, tril
                    statuses[index] = (
                        None if posterior.status is None else posterior.status.task(position)
                    )
                bar.update(len(chunk))
        else:
            for index in range(len(data.keys)):
                posterior = _answer(guide, *data.group(index), passes=passes)
                locs[index], trils[index] = posterior.mean, _scale_tril(posterior)
                statuses[index] = posterior.status
                bar.update(1)
    bar.close()
    posterior = torch.distributions.MultivariateNormal(
        torch.stack(locs), scale_tril=torch.stack(trils)
    )
    status = None
    if all(item is not None for item in statuses):
        status = PosteriorStatus.stack(statuses)
        if warn:
            warn_if_unreliable(
                status, max_steps=guide.convergence.max_steps, batched=True, names=data.keys
            )
    seconds = time.perf_counter() - started
    return GroupedPosterior(
        data.keys,
        data.sizes,
        posterior,
        layout,
        0.0,
        seconds,
        batched,
        data,
        status,
        padded,
    )
