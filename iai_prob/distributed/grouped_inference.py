"""``iai infer --group ... --dask``: the grouped posteriors and their draws on a Dask cluster.

The one-process path (:func:`iai_prob.io.grouped.grouped_posteriors`, then
:func:`iai_prob.io.export.inference_data`) reads the rows, splits them by group, computes
the posteriors in task batches of ``max_tasks`` groups, then the draws in batches of
:data:`~iai_prob.io.export.DRAW_BATCH` groups (:func:`~iai_prob.io.grouped.size_batches`),
each draw batch seeded by ``seed``. Here the client reads and splits the rows the same
way and cuts the same draw batches, and a worker computes each one: its posteriors (in
batches of ``max_tasks``; a group's answer does not depend on its batch) and its draws,
seeded as in one process (:func:`infer_batches`; a worker process loads the guide
once). So the InferenceData gathered on the client, in the groups' natural order, is
the one-process file: the same ``group`` coordinates, sites, ``sample_stats`` and
per-group status (tested within float32 rounding). Only the rows of a batch and its
results travel.

The workers must reach the checkpoint (its absolute path is sent) and, for your own
model, import ``--model`` (a ``path/to/file.py:function`` is loaded by path; a
``module:function`` must be importable on every worker).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "SCHEDULER_TIMEOUT",
    "DaskGroupedPosterior",
    "infer_batches",
    "infer_groups_on_dask",
    "start_client",
]

SCHEDULER_TIMEOUT = 30
"""Seconds ``--dask ADDRESS`` waits for the scheduler to answer."""


class DaskGroupedPosterior(NamedTuple):
    """The grouped result gathered from the workers.

    :ivar result: a :class:`~iai_prob.io.grouped.GroupedPosterior` of every group (its
        ``seconds`` the wall time of the workers' part, posteriors and draws).
    :ivar idata: the InferenceData of every group (posterior, sample_stats with status).
    :ivar workers: the cluster's workers.
    """

    result: object
    idata: object
    workers: int


@functools.lru_cache(maxsize=4)
def _guide(checkpoint: str, model: str | None, max_steps: int | None):
    """The guide as ``iai infer`` loads it, once per worker process."""
    from dataclasses import replace

    from iai_prob.cli.loading import load_checkpoint
    from iai_prob.inference import Convergence

    guide = load_checkpoint(checkpoint, model=model)
    if max_steps is not None:
        guide.convergence = replace(guide.convergence or Convergence(), max_steps=max_steps)
    return guide


def infer_batches(
    data, batches, *, guide_options: dict, max_tasks: int, passes, num_samples: int, seed: int
):
    """On a worker: for each draw batch (indices into ``data``, a
    :class:`~iai_prob.io.grouped.GroupedData`), its posteriors and their InferenceData as
    the one-process path computes them. Returns ``[(locs, scale_trils, status, idata)]``."""
    from iai_prob.io.export import inference_data
    from iai_prob.io.grouped import posteriors_of_groups

    torch.set_num_threads(1)
    guide = _guide(**guide_options)
    answers = []
    for members in batches:
        batch = data.select(members)
        result = posteriors_of_groups(  # the client names the groups, by key, once
            guide, batch, max_tasks=max_tasks, passes=passes, warn=False
        )
        idata = inference_data(guide, result, num_samples=num_samples, seed=seed)
        posterior = result.posterior
        answers.append((posterior.loc, posterior.scale_tril, result.status, idata))
    return answers


def _work_units(batches: list, num_workers: int) -> list[list]:
    """The batches dealt into about four units per worker (contiguous runs of batches),
    so that workers stay busy while the client gathers."""
    count = min(len(batches), max(1, 4 * num_workers))
    return [list(unit) for unit in np.array_split(np.arange(len(batches)), count) if len(unit)]


def infer_groups_on_dask(
    guide,
    data,
    client,
    *,
    guide_options: dict,
    max_tasks: int = 256,
    passes: int | None = None,
    num_samples: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> DaskGroupedPosterior:
    """The posteriors and draws of every group of ``data`` (a
    :class:`~iai_prob.io.grouped.GroupedData`), computed by ``client``'s workers in the
    one-process path's batches (module docstring).

    :param guide: the guide, loaded on the client (it decides the batches and checks the
        statuses, as in one process).
    :param dict guide_options: how a worker loads the same guide (``checkpoint``,
        ``model``, ``max_steps``, as :func:`iai_prob.cli.loading.load_checkpoint`).
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    from iai_prob.io.export import DRAW_BATCH, GATHERED_GROUPS, gather_groups
    from iai_prob.io.grouped import GroupedPosterior, size_batches, task_batches
    from iai_prob.posterior_status import PosteriorStatus, warn_if_unreliable

    started = time.perf_counter()
    _, batched, padded = task_batches(guide, data, max_tasks=max_tasks, passes=passes)
    batches = [members for members, _ in size_batches(data.sizes, DRAW_BATCH, padded)]
    workers = len(client.scheduler_info()["workers"])
    units = _work_units(batches, workers)
    options = {"guide_options": guide_options, "max_tasks": max_tasks, "passes": passes}
    options |= {"num_samples": num_samples, "seed": seed}
    futures = []
    for unit in units:
        members = np.concatenate([batches[b] for b in unit])
        ends = np.cumsum([len(batches[b]) for b in unit])[:-1]
        local = np.split(np.arange(len(members)), ends)  # each batch within the unit's rows
        futures.append(client.submit(infer_batches, data.select(members), local, **options))
    answers = [None] * len(units)
    index_of = {future.key: position for position, future in enumerate(futures)}
    with tqdm(total=len(data.keys), disable=not progress, desc="groups", unit="group") as bar:
        for future in as_completed(futures):
            position = index_of[future.key]
            answers[position] = future.result()
            bar.update(sum(len(batches[b]) for b in units[position]))
    order = np.concatenate(batches)
    flat = [answer for unit in answers for answer in unit]
    position = np.argsort(order, kind="stable")
    locs = torch.cat([answer[0] for answer in flat])[position]
    trils = torch.cat([answer[1] for answer in flat])[position]
    status = None
    if all(answer[2] is not None for answer in flat):
        fields = zip(*(answer[2] for answer in flat), strict=True)  # per field, per batch
        status = PosteriorStatus(*(np.concatenate(field)[position] for field in fields))
        warn_if_unreliable(
            status, max_steps=guide.convergence.max_steps, batched=True, names=data.keys
        )
    parts = zip(batches, (answer[3] for answer in flat), strict=True)
    idata = gather_groups(
        ((members, {g: part[g] for g in GATHERED_GROUPS}) for members, part in parts), data.keys
    )
    result = GroupedPosterior(
        keys=data.keys,
        sizes=data.sizes,
        posterior=torch.distributions.MultivariateNormal(locs, scale_tril=trils),
        layout=guide.prepare(*data.group(0)).layout,
        read_seconds=0.0,
        seconds=time.perf_counter() - started,
        batched=batched,
        data=data,
        status=status,
        padded=padded,
    )
    return DaskGroupedPosterior(result, idata, workers)


@contextmanager
def start_client(spec: str) -> Iterator:
    """A client for ``--dask`` for the block (closed after it, with the cluster it
    started): ``local:N`` starts a local cluster of N single-threaded worker processes;
    anything else is a scheduler's address (``tcp://host:8786``)."""
    from distributed import Client, LocalCluster

    if not spec.startswith("local:"):
        try:
            client = Client(spec, timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError) as error:
            raise ValueError(
                f"--dask: no Dask scheduler answered at {spec!r} within {SCHEDULER_TIMEOUT} s "
                f"({type(error).__name__}); start one (dask scheduler) or use local:N"
            ) from None
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=int(spec.partition(":")[2]),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
