"""Checks of constructor arguments shared by both backends (imports neither torch nor JAX).

The task families of :mod:`iai_prob.models` (one definition for both backends) and the
guides and ``fit`` of both backends refuse the same bad values with the same messages.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "check_loc_scale_tril",
    "check_non_negative_int",
    "check_positive",
    "check_positive_int",
    "check_probabilities",
]


def check_loc_scale_tril(loc_shape: tuple[int, ...], scale_tril_shape: tuple[int, ...]) -> int:
    """The dimension ``d`` of a location of shape ``(..., d)`` and a lower Cholesky factor
    of shape ``(..., d, d)``, or a ``ValueError`` giving the shapes."""
    loc_shape, scale_tril_shape = tuple(loc_shape), tuple(scale_tril_shape)
    if len(loc_shape) < 1 or len(scale_tril_shape) < 2:
        raise ValueError(
            f"loc must have shape (..., d) and scale_tril (..., d, d); "
            f"got {loc_shape} and {scale_tril_shape}"
        )
    dim = loc_shape[-1]
    if scale_tril_shape[-2:] != (dim, dim):
        raise ValueError(f"scale_tril must have shape (..., {dim}, {dim}), got {scale_tril_shape}")
    return dim


def check_positive(name: str, value: float) -> float:
    """Return ``float(value)`` or raise a ``ValueError`` naming ``name``."""
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` as an ``int`` or raise a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_non_negative_int(name: str, value: int) -> int:
    """Return ``value`` as an ``int`` or raise a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_probabilities(name: str, values) -> np.ndarray:
    """``values`` (a probability or a 1-D sequence of them, any array type) as a float64
    NumPy array, or a ``ValueError`` naming ``name`` for a value outside ``[0, 1]`` or NaN.
    """
    levels = np.asarray(values.tolist() if hasattr(values, "tolist") else values, dtype=float)
    if levels.ndim > 1:
        raise ValueError(
            f"{name} must be a probability or a 1-D sequence of them, got shape {levels.shape}"
        )
    bad = levels[~((levels >= 0) & (levels <= 1))]  # NaN fails both comparisons
    if bad.size:
        raise ValueError(f"{name} must lie in [0, 1], got {bad.tolist()} in {values!r}")
    return levels
