"""Checks of constructor arguments shared by both backends (imports neither torch nor JAX).

The task families of :mod:`iai_prob.models` (one definition for both backends) and the
guides and ``fit`` of both backends refuse the same bad values with the same messages.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_non_negative_int", "check_positive", "check_positive_int", "check_probabilities"]


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
