"""Table columns to the model's arguments ``(x, y)``.

Every model read from a table is called as ``model(x, y)`` with ``x`` the covariate
columns stacked as ``(N, d)`` floats (``(N, 0)`` when there are none, the convention of
:mod:`iai_prob.models.generative`) and ``y`` the observed column(s), ``(N,)`` for one
column or ``(N, k)`` for several, in the dtype of the model's observations
(:func:`observation_dtype`). Non-numeric and missing values, and values that the
tensor's dtype cannot hold (``1e39`` overflows float32), are refused with a
``ValueError`` naming the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Columns", "observation_dtype"]


def observation_dtype(guide) -> torch.dtype:
    """The dtype of the observations the guide's model expects.

    A task family's simulator says it (integer for categorical families); any other
    model gets the default float dtype.
    """
    family = getattr(guide, "family", None)
    if family is not None:
        _, _, y = family.sample(1, 1, generator=torch.Generator().manual_seed(0))
        return y.dtype
    return torch.get_default_dtype()


def _check_range(array: np.ndarray, column: str, source: str, dtype: torch.dtype) -> None:
    """Raise a ``ValueError`` naming the column if a value of ``array`` overflows ``dtype``."""
    if dtype == torch.bool:
        return
    if dtype.is_floating_point:
        overflows = torch.isinf(torch.tensor(array).to(dtype)).numpy()
        largest = torch.finfo(dtype).max
    else:
        info = torch.iinfo(dtype)
        overflows = (array < info.min) | (array >= float(info.max) + 1)
        largest = info.max
    if overflows.any():
        value = array[overflows.argmax()]
        raise ValueError(
            f"column {column!r} of {source} holds {value:.4g}, which overflows "
            f"{str(dtype).removeprefix('torch.')} (largest {largest:.4g}); rescale the column"
        )


def _numeric(frame, columns: list[str], source: str, dtype: torch.dtype) -> np.ndarray:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    values = []
    for column in columns:
        series = frame[column]
        if not (is_numeric_dtype(series.dtype) or is_bool_dtype(series.dtype)):
            raise ValueError(
                f"column {column!r} of {source} holds {series.dtype} values; the model needs "
                "numbers"
            )
        array = series.to_numpy(dtype=np.float64, na_value=np.nan)
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise ValueError(f"column {column!r} of {source} has {bad} missing or infinite values")
        _check_range(array, column, source, dtype)
        values.append(array)
    return np.stack(values, axis=-1) if values else np.zeros((len(frame), 0))


class Columns(NamedTuple):
    """Which columns are covariates ``x`` and which are observations ``y``.

    :ivar x: covariate columns (may be empty: generative models).
    :ivar y: observed columns (one or more).
    :ivar y_dtype: the dtype of ``y`` tensors (:func:`observation_dtype`).
    """

    x: tuple[str, ...]
    y: tuple[str, ...]
    y_dtype: torch.dtype = torch.float32

    @classmethod
    def of(cls, x: Sequence[str], y: Sequence[str] | str, *, guide=None) -> Columns:
        """Columns for ``guide`` (its observation dtype); ``y`` may be one name."""
        y = (y,) if isinstance(y, str) else tuple(y)
        if not y:
            raise ValueError("y: give at least one observed column")
        dtype = observation_dtype(guide) if guide is not None else torch.get_default_dtype()
        return cls(tuple(x), y, dtype)

    @property
    def names(self) -> list[str]:
        """All columns, ``x`` then ``y``."""
        return [*self.x, *self.y]

    def tensors(self, frame, *, source: str = "the data") -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` tensors of one DataFrame (``source`` names it in errors)."""
        floats = torch.get_default_dtype()
        x = torch.as_tensor(_numeric(frame, list(self.x), source, floats), dtype=floats)
        y = torch.as_tensor(_numeric(frame, list(self.y), source, self.y_dtype))
        y = y[:, 0] if len(self.y) == 1 else y
        if not self.y_dtype.is_floating_point and not torch.equal(y, y.round()):
            raise ValueError(
                f"columns {list(self.y)} of {source} must hold whole numbers: the model's "
                "observations are integers"
            )
        return x, y.to(self.y_dtype)
