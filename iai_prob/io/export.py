"""Posteriors read from files, as ArviZ InferenceData and a summary table.

The InferenceData comes from :func:`iai_prob.diagnostics.to_inference_data` (draws
``θ_s = T(z_s)``, ``z_s ~ q(z | D)``, with ``log q``, ``log p(z_s, D)`` and the log
importance weights that PSIS k̂ reads), called with the posterior already computed:

* grouped (:class:`~iai_prob.io.grouped.GroupedPosterior`): once per batch of groups
  (:func:`~iai_prob.io.grouped.size_batches`: groups padded together, as their
  posteriors were computed, or of one size), concatenated along a ``group`` dimension whose
  coordinates are the group values; groups ``posterior`` and ``sample_stats``;
* one dataset (:class:`~iai_prob.io.streaming.StreamedPosterior`): when it has at most
  ``max_rows_in_memory`` rows, the full InferenceData (posterior, sample statistics,
  pointwise log-likelihood, posterior predictive, observed data); a larger one was
  streamed and does not fit in memory, so it gets ``posterior`` and ``sample_stats``,
  whose ``lp = log p(z_s, D)`` and log importance weights are summed over every row in
  a second streamed pass (:func:`~iai_prob.io.streaming.stream_log_joint`), not over
  the rows that would fit.

Each dataset's :class:`~iai_prob.posterior_status.PosteriorStatus` (from the
guide's convergence phase) is stored in ``sample_stats`` as ``converged``, ``passes``
and ``khat`` (one value per group, or scalars for one dataset), and
:func:`status_table` prints it.
"""

from __future__ import annotations

import numpy as np
import torch

from iai_prob.io.columns import Columns
from iai_prob.io.grouped import GroupedPosterior, size_batches
from iai_prob.io.streaming import StreamedPosterior
from iai_prob.io.tables import Table

__all__ = [
    "DRAW_BATCH",
    "GATHERED_GROUPS",
    "GROUP_DIM",
    "gather_groups",
    "inference_data",
    "status_table",
    "summary_table",
]

GROUP_DIM = "group"
"""Name of the InferenceData dimension that indexes the groups of a grouped file."""

DRAW_BATCH = 256
"""Groups whose draws are taken in one call (:func:`~iai_prob.io.grouped.size_batches`
of this many; the draws are seeded per call)."""


def _fixed(distribution):
    """A posterior callable for ``to_inference_data`` that returns ``distribution``."""

    def posterior(*args, **kwargs):
        return distribution

    return posterior


def _grouped(guide, result: GroupedPosterior, *, num_samples: int, seed: int):
    from iai_prob.diagnostics import ApproximatePosterior, to_inference_data

    data = result.data
    tasks = guide.config["tasks_plate"]

    def batches():
        for members, rows in size_batches(data.sizes, DRAW_BATCH, result.padded):
            posterior = result.of(members)
            task = guide.prepare(*data.stack(members, rows))
            if rows is not None:
                task = task._replace(data=task.data.padded(torch.as_tensor(data.sizes[members])))
            idata = to_inference_data(
                ApproximatePosterior(posterior, task, guide.model),
                num_samples=num_samples,
                seed=seed,
                posterior_predictive=False,
                log_likelihood=False,
                datatree=False,
            )
            yield members, {g: idata[g].rename({tasks: GROUP_DIM}) for g in GATHERED_GROUPS}

    return gather_groups(batches(), result.keys)


GATHERED_GROUPS = ("posterior", "sample_stats")
"""The InferenceData groups of a grouped file."""


def gather_groups(batches, keys: np.ndarray):
    """One InferenceData of every group from ``batches`` of ``(members, {group: dataset})``
    (the datasets of those groups, along :data:`GROUP_DIM`; ``members`` their indices into
    ``keys``), each batch's values written into arrays allocated once for all the groups,
    in ``keys``' order: the memory is the file's size plus a batch (concatenating, then
    reordering, held three copies: 100,000 groups × 1,000 draws ran out of 23 GB)."""
    import arviz as az
    import xarray as xr

    arrays, templates = {}, {}
    for members, datasets in batches:
        for group, dataset in datasets.items():
            if group not in templates:
                templates[group] = dataset
                arrays[group] = {
                    name: np.empty(
                        tuple(
                            len(keys) if dim == GROUP_DIM else size
                            for dim, size in zip(value.dims, value.shape, strict=True)
                        ),
                        dtype=value.dtype,
                    )
                    for name, value in dataset.data_vars.items()
                }
            for name, value in dataset.data_vars.items():
                place = tuple(members if dim == GROUP_DIM else slice(None) for dim in value.dims)
                arrays[group][name][place] = value.values
    groups = {}
    for group, template in templates.items():
        coords = {
            name: coord for name, coord in template.coords.items() if GROUP_DIM not in coord.dims
        }
        coords[GROUP_DIM] = keys
        variables = {
            name: xr.Variable(template[name].dims, arrays[group][name], template[name].attrs)
            for name in template.data_vars
        }
        groups[group] = xr.Dataset(variables, coords=coords, attrs=template.attrs)
    return az.InferenceData(**groups)


def _single(
    guide,
    result: StreamedPosterior,
    table: Table,
    columns: Columns,
    *,
    num_samples: int,
    seed: int,
    max_rows_in_memory: int,
):
    import arviz as az
    import xarray as xr

    from iai_prob.diagnostics import approximate_posterior, to_inference_data
    from iai_prob.io.streaming import minibatches, stream_log_joint

    complete = result.num_rows <= max_rows_in_memory
    # a dataset too large to hold: the first mini-batch gives the sites, not the statistics
    rows = result.num_rows if complete else guide.config["batch_size"]
    source = approximate_posterior(
        _fixed(result.posterior), guide.model, *next(minibatches(table, columns, rows))
    )
    idata = to_inference_data(
        source,
        num_samples=num_samples,
        seed=seed,
        posterior_predictive=complete,
        log_likelihood=complete,
        datatree=False,
    )
    if complete:
        return idata
    stats = idata.sample_stats
    z = source.sample_latent(num_samples, seed=seed)  # the draws of ``idata``
    lp = stream_log_joint(guide, table, columns, z)
    lp = xr.DataArray(lp.reshape(stats.lp.shape).numpy(), dims=stats.lp.dims)
    stats = stats.assign(lp=lp, log_importance_weight=lp - stats.log_q)
    return az.InferenceData(posterior=idata.posterior, sample_stats=stats)


def inference_data(
    guide,
    result,
    *,
    table: Table | None = None,
    columns: Columns | None = None,
    num_samples: int = 1000,
    seed: int = 0,
    max_rows_in_memory: int = 100_000,
):
    """ArviZ InferenceData of ``result`` (see the module docstring).

    :param guide: the guide that produced ``result`` (its model is evaluated).
    :param result: a :class:`~iai_prob.io.grouped.GroupedPosterior` or a
        :class:`~iai_prob.io.streaming.StreamedPosterior` (then ``table`` and ``columns``
        are needed to read the data back).
    :param int num_samples: posterior draws per dataset.
    :param int seed: seeds the draws.
    :param int max_rows_in_memory: a single dataset with more rows gets only its
        ``posterior`` group.
    """
    if isinstance(result, GroupedPosterior):
        return _with_status(_grouped(guide, result, num_samples=num_samples, seed=seed), result)
    if isinstance(result, StreamedPosterior):
        if table is None or columns is None:
            raise ValueError("inference_data of a StreamedPosterior needs table= and columns=")
        idata = _single(
            guide,
            result,
            table,
            columns,
            num_samples=num_samples,
            seed=seed,
            max_rows_in_memory=max_rows_in_memory,
        )
        return _with_status(idata, result)
    raise ValueError(
        f"result must be a GroupedPosterior or a StreamedPosterior, got {type(result).__name__}"
    )


def _with_status(idata, result):
    """``idata`` with the result's status (if any) added to ``sample_stats``."""
    status = getattr(result, "status", None)
    if status is None:
        return idata
    dims = (GROUP_DIM,) if isinstance(result, GroupedPosterior) else ()
    idata.sample_stats = idata.sample_stats.assign(
        {
            "converged": (dims, status.converged),
            "passes": (dims, status.passes),
            "khat": (dims, status.khat),
        }
    )
    return idata


def status_table(result, *, show: int = 5):
    """Converged, passes and PSIS ``k̂`` of the first ``show`` datasets (a DataFrame), and
    a one-line count of those not converged, with ``k̂ > 0.7`` and with ``0.5 < k̂ ≤ 0.7``;
    ``None`` without status."""
    import pandas as pd

    from iai_prob.posterior_status import KHAT_LIMIT, KHAT_NOTICE

    status = getattr(result, "status", None)
    if status is None:
        return None, None
    grouped = isinstance(result, GroupedPosterior)
    keys = result.keys if grouped else np.array(["(all rows)"])
    converged = np.reshape(status.converged, -1)
    khat = np.reshape(status.khat, -1)
    frame = pd.DataFrame(
        {
            "converged": converged,
            "passes": np.reshape(status.passes, -1),
            "k_hat": np.round(khat, 2),
        },
        index=pd.Index(keys, name=GROUP_DIM if grouped else "dataset"),
    )
    band = (khat > KHAT_NOTICE) & (khat <= KHAT_LIMIT)
    count = (
        f"converged: {int(converged.sum())} of {len(converged)}; "
        f"k̂ > {KHAT_LIMIT}: {int((khat > KHAT_LIMIT).sum())}; "
        f"{KHAT_NOTICE} < k̂ ≤ {KHAT_LIMIT} (PSIS resampling is closer): {int(band.sum())}"
    )
    return frame.head(show), count


def summary_table(idata, *, show: int = 5, hdi_prob: float = 0.9):
    """``arviz.summary`` statistics (mean, sd, HDI) of the posterior, first ``show`` groups."""
    import arviz as az

    posterior = idata.posterior
    if GROUP_DIM in posterior.dims:
        posterior = posterior.isel({GROUP_DIM: slice(0, show)})
    return az.summary(posterior, kind="stats", hdi_prob=hdi_prob)
