"""How an observed site becomes per-point features for the set encoder, in both backends.

An observed value of batch shape ``(…, T?, …, N, …)`` (tasks and data dims where the
model's plates put them) plus its event shape becomes ``(T, N, F)`` features: the tasks
axis first (``T = 1`` without a tasks plate), the data axis second, everything else
flattened into ``F``. A categorical observation (support ``{0, …, K−1}`` with
``2 < K ≤ MAX_ONE_HOT``, one value per point) is one-hot encoded, so the encoder sees
categories rather than their arbitrary codes. Each backend permutes and encodes its own
arrays (:mod:`iai_prob.inference.task_data`, :mod:`iai_prob.numpyro.task_data`); the
rules are here, once. Torch-free and JAX-free.
"""

from __future__ import annotations

__all__ = ["MAX_ONE_HOT", "feature_axes", "one_hot_classes"]

MAX_ONE_HOT = 64
"""Categorical observations with at most this many categories (and at least 3) are one-hot
encoded."""


def feature_axes(ndim: int, num_batch: int, data_dim: int, tasks_dim: int | None) -> list[int]:
    """The permutation of a value's ``ndim`` axes that puts the tasks axis (if any), then
    the data axis, first; ``data_dim`` and ``tasks_dim`` are the plates' negative dims
    within the ``num_batch`` batch axes."""
    order = [num_batch + data_dim]
    if tasks_dim is not None:
        order.insert(0, num_batch + tasks_dim)
    return order + [axis for axis in range(ndim) if axis not in order]


def one_hot_classes(support, integer_interval: type, feature_width: int) -> int | None:
    """The number of one-hot classes for features of width ``feature_width`` drawn from
    ``support`` (``integer_interval`` is the backend's constraint class), else ``None``."""
    if (
        isinstance(support, integer_interval)
        and support.lower_bound == 0
        and 1 < support.upper_bound < MAX_ONE_HOT
        and feature_width == 1
    ):
        return support.upper_bound + 1
    return None
