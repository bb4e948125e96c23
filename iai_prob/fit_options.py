"""The options both backends' ``fit`` take, checked alike before any work.

:func:`iai_prob.inference.fit` (PyTorch) and :func:`iai_prob.numpyro.fit` (JAX) refuse
the same bad budgets with the same one-line ``ValueError``, naming the option, before
they sample a task, build a guide or touch the training folder: each passes its own
arguments (``locals()`` on entry) to :func:`check_fit_options` once (the validation
options through :func:`check_validation_options`), and records the same
:func:`run_settings` in its run identity and its cards. Imports neither torch nor JAX.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

from iai_prob.checks import check_non_negative_int, check_positive, check_positive_int

__all__ = [
    "OBJECTIVES",
    "RUN_SETTINGS",
    "check_fit_options",
    "check_validation_options",
    "run_settings",
]

OBJECTIVES = ("reverse_kl", "forward_kl", "mixed")
"""Meta-training losses: ``−ELBO``, ``−log q(z_true)``, or their sum."""


RUN_SETTINGS = (
    "seed",
    "objective",
    "tasks_per_step",
    "num_points",
    "greedy",
    "max_passes",
    "num_samples",
    "clip_norm",
    "validation_tasks",
    "validate_every",
)
"""The options of ``fit`` that, with the guide, the model and the tasks, define a run: a
resume with other values is refused (:mod:`iai_prob.training_folder`)."""


def check_fit_options(arguments: Mapping) -> tuple[int, int]:
    """Refuse the first bad option of ``arguments`` (a ``fit``'s arguments by name) with a
    ``ValueError`` naming it; return ``num_points`` as ``(lo, hi)`` ints.

    ``steps``, ``tasks_per_step``, ``checkpoint_every``, ``max_passes`` and
    ``num_samples`` are positive integers; ``seed`` and ``max_skipped`` non-negative
    integers; ``clip_norm`` a positive number; ``learning_rate`` a finite number ``>= 0``
    (``0`` builds a guide without changing it); ``num_points`` two integers
    ``1 <= lo <= hi``; ``objective`` one of :data:`OBJECTIVES`; the validation options as
    :func:`check_validation_options` checks them.
    """
    for name in ("steps", "tasks_per_step", "checkpoint_every", "max_passes", "num_samples"):
        check_positive_int(name, arguments[name])
    check_non_negative_int("seed", arguments["seed"])
    check_non_negative_int("max_skipped", arguments["max_skipped"])
    check_positive("clip_norm", arguments["clip_norm"])
    learning_rate = arguments["learning_rate"]
    if not math.isfinite(float(learning_rate)) or learning_rate < 0:
        raise ValueError(f"learning_rate must be a finite number >= 0, got {learning_rate!r}")
    num_points = arguments["num_points"]
    points = tuple(num_points) if isinstance(num_points, Sequence) else ()
    if (
        len(points) != 2
        or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in points)
        or not 1 <= points[0] <= points[1]
    ):
        raise ValueError(
            f"num_points must be (lo, hi), integers with 1 <= lo <= hi, got {num_points!r}"
        )
    if arguments["objective"] not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {arguments['objective']!r}")
    check_validation_options(
        validation_tasks=arguments["validation_tasks"],
        validate_every=arguments["validate_every"],
        early_stopping=arguments["early_stopping"],
    )
    return int(points[0]), int(points[1])


def check_validation_options(*, validation_tasks, validate_every, early_stopping) -> None:
    """Refuse a bad validation option with a ``ValueError`` naming it.

    ``validation_tasks`` is a non-negative integer (``0``: no validation), ``validate_every``
    a positive integer and ``early_stopping`` ``None`` (off) or a positive integer (the
    patience, in validations); early stopping needs validation tasks.
    """
    check_non_negative_int("validation_tasks", validation_tasks)
    check_positive_int("validate_every", validate_every)
    if early_stopping is not None:
        check_positive_int("early_stopping", early_stopping)
        if validation_tasks == 0:
            raise ValueError(
                "early_stopping needs validation tasks to score; give validation_tasks > 0 "
                "or early_stopping=None"
            )


def run_settings(arguments: Mapping) -> dict:
    """The :data:`RUN_SETTINGS` of a ``fit``'s checked ``arguments`` (by name), as its run
    identity and cards record them (``num_points`` as a ``[lo, hi]`` list)."""
    settings = {name: arguments[name] for name in RUN_SETTINGS}
    settings["num_points"] = [int(n) for n in settings["num_points"]]
    return settings
