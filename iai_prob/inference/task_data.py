"""A dataset as the guide sees it: model arguments, plate sizes, per-datum features.

The guide never asks the user to re-shape data: it reads one trace of the model
called with the user's ``*args, **kwargs`` and finds

* ``N``, the size of the data plate, and ``T``, the size of the tasks plate (if any);
* the per-datum features ``h_n`` that a set encoder consumes: the observed sites
  inside the data plate (one-hot for small categorical supports) concatenated with
  the model's tensor arguments whose leading size is the plate size (after ``T``);
* how to take a mini-batch ``B ⊂ {1..N}``: every tensor argument with that leading
  size is indexed along its data axis, so the model must size its data plate from
  its arguments (``pyro.plate("data", len(x))``), as Pyro models normally do.

A user can override the featurization with ``featurize(*args, **kwargs) -> (T?, N, F)``.

Datasets of unequal sizes ``N_t`` go through as one padded batch
(:meth:`TaskData.padded`): every task is stacked to the batch's ``N`` rows and a
``(T, N)`` ``mask`` marks its first ``N_t`` as valid. The padded rows stay in the
model's arguments (copies of a valid row) but weigh nothing: the log joint masks them
out of the observed sites (as ``poutine.mask`` does) and the encoders leave them out of
every mean and attention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from pyro.poutine.util import site_is_subsample
from torch.distributions import constraints

from iai_prob.observed_features import feature_axes, one_hot_classes

__all__ = ["TaskData", "read_task_data"]


def _data_axis(tensor, num_tasks: int | None, num_points: int) -> int | None:
    """The axis of ``tensor`` that indexes data points, or ``None`` if it has none."""
    if not torch.is_tensor(tensor):
        return None
    if num_tasks is None:
        return 0 if tensor.dim() >= 1 and tensor.shape[0] == num_points else None
    if tensor.dim() >= 2 and tuple(tensor.shape[:2]) == (num_tasks, num_points):
        return 1
    return None


def _observed_features(site, num_tasks, tasks_dim, data_dim) -> torch.Tensor:
    """An observed site's value as ``(T_flat, N, F)`` features."""
    fn = site["fn"]
    value = site["value"]
    event_shape = tuple(fn.event_shape)
    try:
        batch_shape = torch.broadcast_shapes(
            tuple(fn.batch_shape), tuple(value.shape[: value.dim() - len(event_shape)])
        )
    except RuntimeError:
        raise ValueError(
            f"observed site {site['name']!r} has shape {tuple(value.shape)}, which does not fit "
            f"its distribution's batch shape {tuple(fn.batch_shape)} and event shape "
            f"{event_shape}: does it have one entry per data point?"
        ) from None
    value = value.expand(*batch_shape, *event_shape)
    value = value.permute(*feature_axes(value.dim(), len(batch_shape), data_dim, tasks_dim))
    if tasks_dim is None:
        value = value.unsqueeze(0)
    features = value.reshape(value.shape[0], value.shape[1], -1)
    classes = one_hot_classes(fn.support, constraints.integer_interval, features.shape[-1])
    if classes is not None:
        features = torch.nn.functional.one_hot(features[..., 0].long(), classes)
    return features.to(torch.get_default_dtype())


@dataclass
class TaskData:
    """The model's arguments for one dataset (or a batch of tasks) and its per-datum features.

    :ivar features: ``(T_flat, N, F)`` features (``T_flat = 1`` when unbatched).
    :ivar num_points: size ``N`` of the data plate in these arguments.
    :ivar total_points: size of the full dataset this (mini-)batch was taken from.
    :ivar mask: ``(T_flat, N)`` booleans, ``False`` on a padded batch's padding; ``None``
        when every point is valid.
    :ivar task_points: ``(T_flat,)`` each task's own dataset size ``N_t`` in a padded
        batch (the encoders' count); ``None`` when every task has ``total_points``.
    """

    args: tuple
    kwargs: dict
    features: torch.Tensor
    num_tasks: int | None
    num_points: int
    total_points: int
    mask: torch.Tensor | None = None
    task_points: torch.Tensor | None = None

    @property
    def likelihood_scale(self) -> float:
        """``N / |B|``: the factor that makes a mini-batch log-likelihood unbiased (a padded
        batch counts its padding in both, and masks it out of the likelihood)."""
        return self.total_points / self.num_points

    @property
    def dataset_sizes(self):
        """The count each task's encoder sees: ``N_t`` ``(T_flat,)`` or ``N``."""
        return self.total_points if self.task_points is None else self.task_points

    def padded(self, sizes: torch.Tensor) -> TaskData:
        """This batch of tasks, stacked to ``N`` rows, as datasets of ``sizes`` ``(T,)``
        rows each: the rows of task ``t`` past ``sizes[t]`` are padding."""
        sizes = torch.as_tensor(sizes, device=self.features.device)
        if self.num_tasks is None or sizes.shape != (self.num_tasks,):
            raise ValueError(
                f"a padded batch needs one size per task ({self.num_tasks} tasks), got "
                f"sizes of shape {tuple(sizes.shape)}"
            )
        if bool((sizes < 1).any()) or bool((sizes > self.num_points).any()):
            raise ValueError(
                f"each dataset of a padded batch has 1 to {self.num_points} rows, got "
                f"sizes {sizes.min().item()} to {sizes.max().item()}"
            )
        mask = torch.arange(self.num_points, device=sizes.device) < sizes[:, None]
        return replace(self, mask=mask, task_points=sizes)

    def task(self, index: int) -> TaskData:
        """Task ``index`` of a batch of tasks, kept as a batch of one."""

        def take(value):
            axis = _data_axis(value, self.num_tasks, self.num_points)
            return value if axis != 1 else value[index : index + 1]

        return TaskData(
            args=tuple(take(a) for a in self.args),
            kwargs={k: take(v) for k, v in self.kwargs.items()},
            features=self.features[index : index + 1],
            num_tasks=1,
            num_points=self.num_points,
            total_points=self.total_points,
            mask=None if self.mask is None else self.mask[index : index + 1],
            task_points=None if self.task_points is None else self.task_points[index : index + 1],
        )

    def to_dtype(self, dtype: torch.dtype) -> TaskData:
        """The same data with every floating-point tensor argument and the features in
        ``dtype`` (integer and boolean arguments, e.g. category labels, are kept)."""

        def cast(value):
            floating = torch.is_tensor(value) and value.is_floating_point()
            return value.to(dtype) if floating else value

        return replace(
            self,
            args=tuple(cast(a) for a in self.args),
            kwargs={k: cast(v) for k, v in self.kwargs.items()},
            features=self.features.to(dtype),
        )

    def subset(self, index: torch.Tensor) -> TaskData:
        """The mini-batch ``index`` (a 1-D index into the data plate), as ``TaskData``."""

        def take(value):
            axis = _data_axis(value, self.num_tasks, self.num_points)
            return value if axis is None else value.index_select(axis, index.to(value.device))

        return replace(
            self,
            args=tuple(take(a) for a in self.args),
            kwargs={k: take(v) for k, v in self.kwargs.items()},
            features=self.features.index_select(1, index.to(self.features.device)),
            num_points=len(index),
            mask=None
            if self.mask is None
            else self.mask.index_select(1, index.to(self.mask.device)),
        )


def read_task_data(
    trace,
    args: tuple,
    kwargs: dict,
    *,
    data_plate: str,
    tasks_plate: str,
    featurize: Callable | None = None,
) -> TaskData:
    """Build :class:`TaskData` from a trace of the model run on ``*args, **kwargs``."""
    frames = {}
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            for frame in site["cond_indep_stack"]:
                frames[frame.name] = frame
    data_frame = frames[data_plate]
    tasks_frame = frames.get(tasks_plate)
    num_points = data_frame.size
    num_tasks = None if tasks_frame is None else tasks_frame.size
    tasks_dim = None if tasks_frame is None else tasks_frame.dim

    observed = [
        site
        for site in trace.nodes.values()
        if site["type"] == "sample"
        and site["is_observed"]
        and not site_is_subsample(site)
        and any(f.name == data_plate for f in site["cond_indep_stack"])
    ]
    if not observed:
        raise ValueError(
            f"the model has no observed site inside the data plate {data_plate!r}: an "
            "amortized guide conditions on the data, so pass the observations (e.g. "
            "guide(x, y), Predictive(model, guide=guide, ...)(x, y))"
        )
    if featurize is not None:
        features = featurize(*args, **kwargs)
        if tasks_frame is None and features.dim() == 2:
            features = features.unsqueeze(0)
        expected = (1 if num_tasks is None else num_tasks, num_points)
        if features.dim() != 3 or tuple(features.shape[:2]) != expected:
            raise ValueError(
                f"featurize must return features of shape (T, N, F) or (N, F) with "
                f"(T, N) = {expected}, got {tuple(features.shape)}"
            )
    else:
        parts, seen = [], set()
        for site in observed:
            parts.append(_observed_features(site, num_tasks, tasks_dim, data_frame.dim))
            seen.add(id(site["value"]))
        for value in (*args, *kwargs.values()):
            axis = _data_axis(value, num_tasks, num_points)
            if axis is None or id(value) in seen or not value.is_floating_point():
                continue
            flat = value.reshape(*value.shape[: axis + 1], -1)
            parts.append((flat if axis == 1 else flat.unsqueeze(0)).to(torch.get_default_dtype()))
        features = torch.cat([p.expand(p.shape[0], num_points, p.shape[-1]) for p in parts], -1)
    if not torch.isfinite(features).all():
        raise ValueError("the data contain NaN or inf values; clean or mask them first")
    return TaskData(
        args=tuple(args),
        kwargs=dict(kwargs),
        features=features,
        num_tasks=num_tasks,
        num_points=num_points,
        total_points=num_points,
    )
