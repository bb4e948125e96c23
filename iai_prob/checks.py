"""Checks of constructor arguments shared by both backends (imports neither torch nor JAX).

The task families of :mod:`iai_prob.models` and :mod:`iai_prob.numpyro.models` take the
same arguments and refuse the same bad values with the same messages.
"""

from __future__ import annotations

import math

__all__ = ["check_non_negative_int", "check_positive", "check_positive_int"]


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
