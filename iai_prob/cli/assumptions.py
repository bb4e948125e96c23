"""What a guide assumes about the data, in words, and a warning when the data do not fit.

A guide trained for a task family learned posteriors for datasets like the family's
prior predictive: the family's configuration is fixed (the dimension, a noise scale the
model does not infer, the prior), and the covariates and observations had the scale the
simulator draws. ``iai pretrained`` prints these assumptions (:func:`describe`), and
``iai infer`` / ``iai diagnose`` warn, in one line, when the data's scale is far
outside what training saw (:func:`scale_warning`). The run still completes: the
posterior is what the model says for these data, and how far off it is depends on the
family and the guide.

Rule. Over :data:`NUM_TASKS` datasets of the largest training size simulated from the
family (seeded), the root mean square (RMS) of each ``x`` column and of ``y`` per
dataset has a central 99% range ``[q₀.₀₀₅, q₀.₉₉₅]``. Data whose RMS (over the rows
read first, up to ``--chunk-rows``) is below ``q₀.₀₀₅ / 2`` or above ``2 q₀.₉₉₅`` are
flagged. With the shipped ``linear_regression`` guide on its 2,000-row demo dataset
(posterior mean 0.25 exact-posterior sds from the exact one), ``y × 3`` (RMS 8.4 against
an upper limit of 9.4) moved it to 0.76 sd and is not flagged; ``y × 5`` (RMS 14) moved
it to 1.3 sd and ``y × 10`` to 2.6 sd, both flagged, as are ``y × 1,000`` and
``y = 10¹²``; ``x × 0.1`` on 64 rows moved it 3.3 sd. The number of rows is not checked:
refinement streams a dataset of any size in mini-batches. Observations that are all
integers in the simulator (Bernoulli, categorical) have a scale fixed by the model, so
only their covariates are checked; a guide of your own model (no task family) is not
checked.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["FACTOR", "NUM_TASKS", "TrainingScales", "describe", "scale_warning", "training_scales"]

NUM_TASKS = 2048
"""Simulated datasets behind the training ranges (fewer when datasets are large)."""
FACTOR = 2.0
"""How far outside the central 99% training range a scale must be to be flagged."""
_QUANTILES = (0.005, 0.995)
_DEFAULT_POINTS = (16, 256)


@dataclass(frozen=True)
class TrainingScales:
    """The per-dataset RMS ranges of the training tasks (central 99%).

    :ivar num_points: the training dataset sizes ``(lo, hi)``.
    :ivar x: ``(d, 2)``: the range of each covariate column's RMS.
    :ivar y: the range of the observations' RMS, ``None`` for integer observations.
    """

    num_points: tuple[int, int]
    x: np.ndarray
    y: tuple[float, float] | None

    @staticmethod
    def allowed(low: float, high: float) -> tuple[float, float]:
        """The limits beyond which a scale is flagged: ``[low / FACTOR, FACTOR high]``."""
        return low / FACTOR, high * FACTOR


def _rms(values, axes) -> np.ndarray:
    return np.sqrt(np.mean(np.square(np.asarray(values, dtype=np.float64)), axis=axes))


def training_scales(family, num_points=None) -> TrainingScales:
    """:class:`TrainingScales` of ``family``'s prior predictive at the largest of
    ``num_points`` (the card's training range; default 16 to 256)."""
    import torch

    low, high = (int(n) for n in (num_points or _DEFAULT_POINTS))
    tasks = max(64, min(NUM_TASKS, 2**20 // high))
    _, x, y = family.sample(tasks, high, generator=torch.Generator().manual_seed(0))
    x, y = x.double().numpy(), y.double().numpy()
    x_rms = _rms(x, 1) if x.ndim == 3 else np.zeros((tasks, 0))  # (T, d)
    x_range = np.quantile(x_rms, _QUANTILES, axis=0).T if x_rms.shape[1] else np.zeros((0, 2))
    y_range = None
    if not np.array_equal(y, np.round(y)):
        y_rms = _rms(y.reshape(tasks, -1), 1)
        y_range = tuple(float(q) for q in np.quantile(y_rms, _QUANTILES))
    return TrainingScales((low, high), x_range, y_range)


def _outside(value: float, low: float, high: float) -> bool:
    lower, upper = TrainingScales.allowed(low, high)
    return not lower <= value <= upper


def scale_warning(guide, x, y, *, x_names, checkpoint: str) -> str | None:
    """One line saying which columns' scale lies far outside the training range of
    ``guide`` (a guide with a task family), or ``None`` when every column fits."""
    family = getattr(guide, "family", None)
    if family is None or len(y) == 0:
        return None
    scales = training_scales(family, getattr(guide, "card", {}).get("budget", {}).get("num_points"))
    problems = []
    x_rms = _rms(x, 0) if np.ndim(x) == 2 else np.zeros(0)
    flagged = [
        (name, value)
        for name, value, (low, high) in zip(x_names, x_rms, scales.x, strict=False)
        if _outside(value, low, high)
    ]
    if flagged:
        names = ", ".join(name for name, _ in flagged[:4]) + (", …" if len(flagged) > 4 else "")
        values = [value for _, value in flagged]
        shown = f"{min(values):.3g}" + (f"–{max(values):.3g}" if len(values) > 1 else "")
        problems.append(
            f"--x {names} root mean square {shown} (training "
            f"{scales.x[:, 0].min():.2g}–{scales.x[:, 1].max():.2g})"
        )
    if scales.y is not None:
        value = float(_rms(np.asarray(y).reshape(len(y), -1), None))
        if _outside(value, *scales.y):
            problems.append(
                f"--y root mean square {value:.3g} (training {scales.y[0]:.2g}–{scales.y[1]:.2g})"
            )
    if not problems:
        return None
    return (
        f"the data's scale is far outside what checkpoint {checkpoint!r} was trained on: "
        f"{'; '.join(problems)} per dataset, flagged beyond {FACTOR:g}x that range; its "
        "posterior may be far off: check the units, or train a guide on data like these "
        "(iai train)"
    )


def _parameter_words(family) -> dict[str, str]:
    """``name`` → its ``:param`` description in the family's docstring, as plain text."""
    from iai_prob.cli.helptext import plain

    doc = inspect.getdoc(type(family)) or ""
    return {
        name: plain(text).rstrip(".")
        for name, text in re.findall(r":param (?:\w+ )?(\w+):\s*(.+)", doc)
    }


def describe(family, card: dict) -> list[str]:
    """The assumptions of a guide of ``family`` with this card, one line each, in words."""
    import torch

    from iai_prob.cli.helptext import plain

    doc = (inspect.getdoc(type(family)) or "").split("\n\n")[0]
    _, x, y = family.sample(1, 1, generator=torch.Generator().manual_seed(0))
    words = _parameter_words(family)
    lines = [f"model: {plain(' '.join(doc.split()))}"]
    lines.append(
        f"data: {x.shape[-1] if x.dim() == 3 else 0} --x column(s) and "
        f"{int(np.prod(y.shape[2:]))} --y column(s)"
    )
    lines.append("fixed when trained (not inferred from the data):")
    for name, value in family.config().items():
        lines.append(f"  {name} = {value}: {words.get(name, name)}")
    budget = card.get("budget", {})
    scales = training_scales(family, budget.get("num_points"))
    low, high = scales.num_points
    lines.append(
        f"trained on: datasets of {low} to {high} rows (larger ones are fine: refinement "
        "streams them)"
    )
    scale = []
    if len(scales.x):
        lows, highs = scales.x[:, 0].min(), scales.x[:, 1].max()
        scale.append(f"x columns {lows:.2g}–{highs:.2g}")
    if scales.y is not None:
        scale.append(f"y {scales.y[0]:.2g}–{scales.y[1]:.2g}")
    else:
        lines.append("y: whole numbers, whose scale the model fixes (not checked)")
    if scale:
        limits = []
        if len(scales.x):
            limits.append("x {:.2g}–{:.2g}".format(*TrainingScales.allowed(lows, highs)))
        if scales.y is not None:
            limits.append("y {:.2g}–{:.2g}".format(*TrainingScales.allowed(*scales.y)))
        lines.append(
            f"scale: root mean square per dataset {', '.join(scale)} (99% of the prior "
            f"predictive); iai infer warns outside {', '.join(limits)}"
        )
    else:
        lines.append("scale: integer observations and no covariates: nothing to check")
    return lines
