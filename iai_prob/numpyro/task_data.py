"""A dataset as the NumPyro guide sees it: model arguments, per-datum features, a mask.

The twin of :mod:`iai_prob.inference.task_data`. One trace of the model on the user's
``*args, **kwargs`` gives ``N`` (data plate) and ``T`` (tasks plate, if any); the
per-datum features are the observed sites inside the data plate (one-hot for small
categorical supports) followed by the floating-point arguments whose leading size is
``N`` (after ``T``), in the same order as the PyTorch side, so one encoder serves both.

Arguments are stored task-major: every per-point array has shape ``(T, N, …)`` (``T = 1``
for one dataset), so the log joint is evaluated one task at a time with ``jax.vmap``
and a mini-batch is an index along axis 1. A mini-batch keeps a fixed size ``B_max``
and a boolean ``mask``: mini-batches of unequal sizes share one compiled ``lax.scan``.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions import constraints

from iai_prob.numpyro.sites import plate_frames
from iai_prob.observed_features import feature_axes, one_hot_classes

__all__ = [
    "TaskData",
    "call_signature",
    "check_finite_features",
    "read_task_data",
    "read_task_data_compiled",
    "trace_model",
]


class TaskData(eqx.Module):
    """The model's arguments for ``T`` tasks and their per-datum features.

    :ivar args: model arguments; per-point arrays ``(T, N, …)``, per-task arrays ``(T, …)``.
    :ivar features: ``(T, N, F)``.
    :ivar mask: ``(N,)`` booleans, ``False`` on padding.
    :ivar total_points: size of the full dataset the points come from.
    :ivar axes: for each leaf of ``(args, kwargs)``: ``"point"``, ``"task"`` or ``None``.
    :ivar batched: whether the user passed a batch of tasks (a tasks plate).
    :ivar task_mask: ``(T, N)`` booleans of a padded batch of datasets of unequal sizes
        (:meth:`padded`), ``False`` on each task's padding; ``None``: every task's
        points are all its own. Unlike ``mask``, its padding still counts in ``N/|B|``
        (the padded rows weigh nothing, as in the PyTorch
        :class:`~iai_prob.inference.task_data.TaskData`).
    :ivar task_points: ``(T,)`` each task's own size ``N_t`` in a padded batch (the
        encoders' count), or ``None``.
    """

    args: tuple
    kwargs: dict
    features: jax.Array
    mask: jax.Array
    total_points: jax.Array
    axes: tuple = eqx.field(static=True)
    batched: bool = eqx.field(static=True)
    task_mask: jax.Array | None = None
    task_points: jax.Array | None = None

    @property
    def num_tasks(self) -> int:
        return self.features.shape[0]

    @property
    def size(self) -> int:
        """Static number of (possibly padded) points."""
        return self.features.shape[1]

    @property
    def num_points(self):
        """Number of valid points (traced)."""
        return self.mask.sum().astype(self.features.dtype)

    @property
    def likelihood_scale(self):
        """``N / |B|``: the factor that makes a mini-batch log-likelihood unbiased."""
        return self.total_points / self.num_points

    @property
    def point_mask(self):
        """The valid points: ``mask`` ``(N,)``, or per task ``(T, N)`` in a padded batch."""
        if self.task_mask is None:
            return self.mask
        return self.mask[None, :] & self.task_mask

    @property
    def dataset_sizes(self):
        """The count each task's encoder sees: ``N_t`` ``(T,)`` or ``N``."""
        return self.total_points if self.task_points is None else self.task_points

    def padded(self, sizes) -> TaskData:
        """This batch of tasks, stacked to ``N`` rows, as datasets of ``sizes`` ``(T,)``
        rows each: the rows of task ``t`` past ``sizes[t]`` are padding."""
        sizes = np.asarray(sizes)
        if not self.batched or sizes.shape != (self.num_tasks,):
            tasks = self.num_tasks if self.batched else None
            raise ValueError(
                f"a padded batch needs one size per task ({tasks} tasks), got sizes of shape "
                f"{sizes.shape}"
            )
        if (sizes < 1).any() or (sizes > self.size).any():
            raise ValueError(
                f"each dataset of a padded batch has 1 to {self.size} rows, got "
                f"sizes {sizes.min()} to {sizes.max()}"
            )
        task_mask = jnp.arange(self.size) < jnp.asarray(sizes)[:, None]
        points = jnp.asarray(sizes, self.features.dtype)
        return TaskData(
            self.args,
            self.kwargs,
            self.features,
            self.mask,
            self.total_points,
            self.axes,
            self.batched,
            task_mask,
            points,
        )

    def take_per_task(self, index, valid) -> TaskData:
        """The points ``index`` ``(T, B)`` of each task, ``valid`` ``(T, B)`` where they are
        its own (a padded batch's per-task context)."""

        def take(leaf, axis):
            if axis != "point":
                return leaf
            at = index.reshape(*index.shape, *(1,) * (jnp.ndim(leaf) - 2))
            return jnp.take_along_axis(leaf, at, axis=1)

        args, kwargs = self._map(take)
        return TaskData(
            args,
            kwargs,
            jnp.take_along_axis(self.features, index[..., None], axis=1),
            jnp.ones(index.shape[1], bool),
            self.total_points,
            self.axes,
            self.batched,
            valid,
            self.task_points,
        )

    def _map(self, fn):
        leaves, treedef = jax.tree_util.tree_flatten((self.args, self.kwargs))
        leaves = [fn(leaf, axis) for leaf, axis in zip(leaves, self.axes, strict=True)]
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def subset(self, index, mask=None) -> TaskData:
        """The points ``index`` (``(B,)``, the same for every task) with validity ``mask``."""
        args, kwargs = self._map(
            lambda leaf, axis: jnp.take(leaf, index, axis=1) if axis == "point" else leaf
        )
        valid = jnp.take(self.mask, index) if mask is None else mask & jnp.take(self.mask, index)
        return TaskData(
            args,
            kwargs,
            jnp.take(self.features, index, axis=1),
            valid,
            self.total_points,
            self.axes,
            self.batched,
            None if self.task_mask is None else jnp.take(self.task_mask, index, axis=1),
            self.task_points,
        )

    def in_axes(self):
        """``jax.vmap`` axes of ``(args, kwargs)`` over tasks."""
        return self._map(lambda leaf, axis: None if axis is None else 0)

    def task(self, index: int | slice) -> tuple[tuple, dict]:
        """``(args, kwargs)`` of task ``index`` as the model takes one dataset, or of the
        tasks ``index`` (a slice) as it takes a batch of them."""
        return self._map(lambda leaf, axis: leaf if axis is None else leaf[index])


def check_finite_features(features) -> None:
    """Refuse data with NaN or inf values (concrete features only: under a JAX trace the
    values are not known)."""
    if not isinstance(features, jax.core.Tracer) and not np.isfinite(np.asarray(features)).all():
        raise ValueError("the data contain NaN or inf values; clean or mask them first")


def call_signature(args: tuple, kwargs: dict):
    """What :func:`read_task_data`'s layout depends on: the arguments' structure, each
    array's shape and dtype and every other argument's value; ``None`` when an argument
    is neither an array nor hashable (then nothing is cached for the call)."""
    leaves, treedef = jax.tree_util.tree_flatten((tuple(args), dict(kwargs)))
    parts = []
    for leaf in leaves:
        if isinstance(leaf, jax.Array | np.ndarray):
            parts.append(("array", tuple(leaf.shape), str(leaf.dtype)))
            continue
        try:
            hash(leaf)
        except TypeError:
            return None
        parts.append(("value", type(leaf).__name__, leaf))
    return treedef, tuple(parts)


@eqx.filter_jit
def read_task_data_compiled(
    model, args, kwargs, data_plate: str, tasks_plate: str, featurize
) -> TaskData:
    """:func:`read_task_data`'s ``TaskData``, compiled once per :func:`call_signature`: the
    model is traced when compiling only, so a call costs one dispatch instead of an
    eager model run (milliseconds of small operations). Its features are not checked for
    finiteness (:func:`check_finite_features` does it on the result); a model whose
    trace needs concrete values raises a :class:`jax.errors.JAXTypeError`."""
    return read_task_data(
        model, args, kwargs, data_plate=data_plate, tasks_plate=tasks_plate, featurize=featurize
    )[0]


def trace_model(model, args, kwargs):
    """A seeded, blocked trace of ``model(*args, **kwargs)``."""
    with handlers.block():
        return handlers.trace(handlers.seed(model, rng_seed=0)).get_trace(*args, **kwargs)


def _observed_features(site, tasks_dim, data_dim):
    """An observed site's value as ``(T, N, F)`` features (``T = 1`` if unbatched)."""
    fn = site["fn"]
    value = jnp.asarray(site["value"])
    event_shape = tuple(fn.event_shape)
    batch_shape = jnp.broadcast_shapes(
        tuple(fn.batch_shape), value.shape[: value.ndim - len(event_shape)]
    )
    value = jnp.broadcast_to(value, (*batch_shape, *event_shape))
    value = jnp.transpose(value, feature_axes(value.ndim, len(batch_shape), data_dim, tasks_dim))
    if tasks_dim is None:
        value = value[None]
    features = value.reshape(value.shape[0], value.shape[1], -1)
    classes = one_hot_classes(fn.support, constraints.integer_interval, features.shape[-1])
    if classes is not None:
        features = jax.nn.one_hot(features[..., 0].astype(jnp.int32), classes)
    return features.astype(jnp.result_type(float))


def _axis(leaf, num_tasks, num_points):
    shape = jnp.shape(leaf)
    if num_tasks is None:
        return "point" if len(shape) >= 1 and shape[0] == num_points else None
    if len(shape) >= 2 and tuple(shape[:2]) == (num_tasks, num_points):
        return "point"
    return "task" if len(shape) >= 1 and shape[0] == num_tasks else None


def read_task_data(
    model,
    args: tuple,
    kwargs: dict,
    *,
    data_plate: str,
    tasks_plate: str,
    featurize: Callable | None = None,
):
    """``(TaskData, trace, (T, tasks_dim) or None)`` for the model run on ``*args, **kwargs``."""
    trace = trace_model(model, args, kwargs)
    frames = plate_frames(trace)
    if data_plate not in frames:
        raise ValueError(
            f"the model has no plate named {data_plate!r}; found plates {sorted(frames)}. "
            f"Put the observations inside numpyro.plate({data_plate!r}, N) or pass "
            "data_plate=..."
        )
    data_frame = frames[data_plate]
    tasks_frame = frames.get(tasks_plate)
    num_points = data_frame.size
    num_tasks = None if tasks_frame is None else tasks_frame.size
    tasks_dim = None if tasks_frame is None else tasks_frame.dim
    leaves, treedef = jax.tree_util.tree_flatten((tuple(args), dict(kwargs)))
    axes = tuple(_axis(leaf, num_tasks, num_points) for leaf in leaves)
    if featurize is not None:
        features = jnp.asarray(featurize(*args, **kwargs), jnp.result_type(float))
        if features.ndim == 2:
            features = features[None]
        expected = (1 if num_tasks is None else num_tasks, num_points)
        if features.ndim != 3 or tuple(features.shape[:2]) != expected:
            raise ValueError(
                f"featurize must return features of shape (T, N, F) or (N, F) with "
                f"(T, N) = {expected}, got {tuple(features.shape)}"
            )
    else:
        parts, seen = [], set()
        for site in trace.values():
            in_data = any(f.name == data_plate for f in site.get("cond_indep_stack", ()))
            if site["type"] == "sample" and site["is_observed"] and in_data:
                parts.append(_observed_features(site, tasks_dim, data_frame.dim))
                seen.add(id(site["value"]))
        if not parts:
            raise ValueError(
                f"the model has no observed site inside the data plate {data_plate!r}: an "
                "amortized guide conditions on the data, so pass the observations (e.g. "
                "guide(x, y), Predictive(model, guide=guide, ...)(x, y))"
            )
        for leaf, axis in zip(leaves, axes, strict=True):
            if axis != "point" or id(leaf) in seen or not jnp.issubdtype(leaf.dtype, jnp.floating):
                continue
            flat = leaf.reshape(*leaf.shape[: 2 if num_tasks else 1], -1)
            parts.append((flat if num_tasks else flat[None]).astype(jnp.result_type(float)))
        features = jnp.concatenate(
            [jnp.broadcast_to(p, (p.shape[0], num_points, p.shape[-1])) for p in parts], -1
        )
    check_finite_features(features)
    if num_tasks is None:  # task-major storage: a leading T = 1
        leaves = [
            leaf if axis is None else jnp.asarray(leaf)[None]
            for leaf, axis in zip(leaves, axes, strict=True)
        ]
    else:
        leaves = [
            leaf if axis is None else jnp.asarray(leaf)
            for leaf, axis in zip(leaves, axes, strict=True)
        ]
    stored_args, stored_kwargs = jax.tree_util.tree_unflatten(treedef, leaves)
    data = TaskData(
        stored_args,
        stored_kwargs,
        features,
        jnp.ones(num_points, bool),
        jnp.asarray(num_points, jnp.result_type(float)),
        tuple("point" if a == "point" else ("task" if a is not None else None) for a in axes),
        num_tasks is not None,
    )
    tasks = None if num_tasks is None else (num_tasks, tasks_dim)
    return data, trace, tasks
