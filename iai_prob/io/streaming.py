"""One dataset larger than memory: stream a table through ``guide.refine``.

The rows are read chunk by chunk (:class:`~iai_prob.io.tables.Table`) and cut into
mini-batches ``B_k`` of ``batch_size`` rows, and each mini-batch is one refinement step

    λ_{k+1} = step_φ(λ_k, B_k),   with the likelihood scaled by N/|B_k|,

(Mittal, Mahajan, Lajoie, Pezeshki 2025, §3; :meth:`IterativeAmortizedGuide.refine`),
so memory is constant in ``N`` and time is linear in it. ``N`` comes from the table's
row count (Parquet metadata, or one counting pass over a CSV).

:func:`stream_log_joint` evaluates ``log p(z_s, D)`` of posterior draws over every row
in the same constant memory, for the importance weights of a dataset too large to hold.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from iai_prob.io.columns import Columns
from iai_prob.io.tables import Table

__all__ = ["StreamedPosterior", "minibatches", "stream_log_joint", "stream_posterior"]


class StreamedPosterior(NamedTuple):
    """The posterior of one streamed dataset.

    :ivar posterior: ``q(z | D)`` over the joint unconstrained latents (event ``(D,)``).
    :ivar layout: the :class:`~iai_prob.latent_layout.LatentLayout` that maps ``z`` to
        the model's sites.
    :ivar num_rows: ``N``.
    :ivar seconds: wall time of the pass.
    """

    posterior: torch.distributions.Distribution
    layout: object
    num_rows: int
    seconds: float

    @property
    def status(self):
        """Converged, passes and ``k̂`` of the answer
        (:class:`~iai_prob.posterior_status.PosteriorStatus`), or ``None``."""
        return getattr(self.posterior, "status", None)


def minibatches(
    table: Table, columns: Columns, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x_b, y_b)`` of ``batch_size`` rows (the last may be shorter) from ``table``."""
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    pending_x, pending_y, pending = [], [], 0
    for frame in table.chunks(columns.names):
        x, y = columns.tensors(frame, source=table.path.name)
        pending_x.append(x)
        pending_y.append(y)
        pending += len(x)
        if pending < batch_size:
            continue
        x, y = torch.cat(pending_x), torch.cat(pending_y)
        full = (len(x) // batch_size) * batch_size
        for start in range(0, full, batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        pending_x, pending_y, pending = [x[full:]], [y[full:]], len(x) - full
    if pending:
        yield torch.cat(pending_x), torch.cat(pending_y)


def stream_posterior(
    guide,
    table: Table,
    columns: Columns,
    *,
    batch_size: int | None = None,
    passes: int = 1,
    progress: bool = False,
) -> StreamedPosterior:
    """One pass of ``guide`` over every row of ``table``: ``q(z | D)`` in constant memory.

    :param guide: a trained :class:`~iai_prob.inference.IterativeAmortizedGuide`.
    :param table: the data (:class:`~iai_prob.io.tables.Table`).
    :param columns: which columns are ``x`` and ``y`` (:class:`~iai_prob.io.columns.Columns`).
    :param int batch_size: rows per refinement step (default: the guide's ``batch_size``).
    :param int passes: passes over the file (each reads it again).
    :param bool progress: show a progress bar over rows.
    """
    table.require(columns.names, option="columns")
    batch_size = batch_size or guide.config["batch_size"]
    num_rows = table.num_rows
    if num_rows < 1:
        raise ValueError(f"data file {table.path.name} has no rows")
    started = time.perf_counter()
    bar = tqdm(total=passes * num_rows, disable=not progress, desc="refine", unit="row")

    first = []

    def batches():
        for x, y in minibatches(table, columns, batch_size):
            if not first:
                first.append((x, y))
            bar.update(len(x))
            yield x, y

    posterior = guide.refine(batches, passes=passes, num_points=num_rows)
    bar.close()
    seconds = time.perf_counter() - started
    layout = guide.prepare(*first[0]).layout
    return StreamedPosterior(posterior, layout, num_rows, seconds)


@torch.no_grad()
def stream_log_joint(
    guide, table: Table, columns: Columns, z: torch.Tensor, *, max_elements: int = 2**22
) -> torch.Tensor:
    """``log p(z_s, D)`` over every row of ``table`` for draws ``z`` of shape ``(S, 1, D)``.

    The rows are cut into ``K`` batches ``B_k`` of about ``max_elements / S`` rows, and
    each is evaluated with its likelihood scaled by ``K``:

        f_k(z) = log p(T(z)) + log |det ∂T/∂z| + K Σ_{n∈B_k} log p(y_n | x_n, T(z)),

    so that the average ``(1/K) Σ_k f_k(z)`` is exactly ``log p(z, D)`` (the prior and
    the Jacobian enter each ``f_k`` once, each likelihood term ``K`` times), whatever the
    batch sizes. Memory is ``O(max_elements)``; time is one pass over the file.

    :returns: ``(S, 1)`` float64, as :func:`~iai_prob.diagnostics.adapter.log_joint_per_draw`.
    """
    from iai_prob.diagnostics.adapter import log_joint_per_draw

    rows = max(1, max_elements // len(z))
    count = math.ceil(table.num_rows / rows)
    total = torch.zeros(z.shape[:2], dtype=torch.float64)
    batches = 0
    for x, y in minibatches(table, columns, rows):
        task = guide.prepare(x, y)
        data = dataclasses.replace(task.data, total_points=count * task.data.num_points)
        total += log_joint_per_draw(task._replace(data=data), z, max_elements=max_elements)
        batches += 1
    if batches != count:  # the scale K assumed the row count read before
        raise ValueError(f"data file {table.path.name} changed while it was read; run again")
    return total / count
