"""The options of an ``IterativeAmortizedGuide``, checked and recorded once for both backends.

The PyTorch guide (:class:`iai_prob.inference.IterativeAmortizedGuide`) and its NumPyro
twin (:class:`iai_prob.numpyro.IterativeAmortizedGuide`) take the same keyword arguments
and write the same ``config`` into their checkpoint cards, so that a checkpoint of either
loads in the other. This module holds the option names (:data:`SIGNALS`,
:data:`LINEARIZATIONS`, :data:`UPDATE_RULES`), their checks (one ``ValueError`` naming the
bad value) and the record (:func:`guide_config`). Torch-free and JAX-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from iai_prob.checks import check_non_negative_int
from iai_prob.convergence_settings import Convergence
from iai_prob.encoder_sizes import encoder_sizes

__all__ = [
    "GRADIENT_RULES",
    "LINEARIZATIONS",
    "SIGNALS",
    "UPDATE_RULES",
    "check_convergence",
    "check_linearization",
    "check_signals",
    "guide_config",
]

SIGNALS = ("data", "grad")
"""What a refinement step may see: the mini-batch embedding and the ELBO gradient."""
LINEARIZATIONS = ("sigma_points", "mean", "samples")
"""Where the log-likelihood's gradient and curvature are taken (``linearization=``)."""
GRADIENT_RULES = ("maml", "meta_sgd")
"""Plain-gradient update rules: one learned step size (MAML) or one per coordinate (Meta-SGD)."""
UPDATE_RULES = ("natural_gradient", *GRADIENT_RULES)
"""Refinement update rules: the learned natural-gradient step, MAML and Meta-SGD."""


def check_signals(signals: Iterable[str]) -> tuple[str, ...]:
    """``signals`` as a tuple, a non-empty subset of :data:`SIGNALS`."""
    signals = tuple(signals)
    if not signals or any(s not in SIGNALS for s in signals):
        raise ValueError(f"signals must be a non-empty subset of {SIGNALS}, got {signals!r}")
    return signals


def check_linearization(linearization: str) -> str:
    """``linearization``, one of :data:`LINEARIZATIONS`."""
    if linearization not in LINEARIZATIONS:
        raise ValueError(f"unknown linearization {linearization!r}; choose from {LINEARIZATIONS}")
    return linearization


def check_convergence(convergence) -> Convergence | None:
    """``convergence``, a :class:`~iai_prob.convergence_settings.Convergence` or ``None``."""
    if convergence is not None and not isinstance(convergence, Convergence):
        raise ValueError(
            "convergence must be an iai_prob.convergence_settings.Convergence (also "
            f"iai_prob.inference.Convergence) or None, got {type(convergence).__name__}"
        )
    return convergence


def _check_update(update: str, implemented: tuple[str, ...]) -> None:
    if update in UPDATE_RULES and update not in implemented:
        raise ValueError(
            f"update={update!r} is implemented in the PyTorch guide only "
            "(iai_prob.inference.IterativeAmortizedGuide); this guide implements "
            f"update={implemented[0]!r}"
        )
    if update not in UPDATE_RULES:
        raise ValueError(f"unknown update {update!r}; choose from {UPDATE_RULES}")


def guide_config(
    *,
    family: str,
    encoder: str,
    num_steps: int | None,
    batch_size: int,
    signals: Iterable[str],
    data_plate: str,
    tasks_plate: str,
    linearization: str,
    num_particles: int,
    context_size: int,
    rank: int,
    encoder_options: dict | None,
    seed: int,
    update: str,
    inner_lr: float,
    max_relinearizations: int,
    standardize: bool,
    check_family: Callable[[str], object],
    updates: tuple[str, ...] = UPDATE_RULES,
) -> dict:
    """The guide's ``config`` (what its checkpoint card records) from its keyword
    arguments, each checked (the encoder and its ``encoder_options`` by
    :func:`~iai_prob.encoder_sizes.encoder_sizes`): ``check_family(name)`` refuses an
    unknown posterior family, ``updates`` are the update rules the backend implements (a
    rule of :data:`UPDATE_RULES` outside them is refused by name)."""
    if num_steps is not None and (int(num_steps) != num_steps or num_steps < 0):
        raise ValueError(f"num_steps must be None or a non-negative integer, got {num_steps!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_non_negative_int("max_relinearizations", max_relinearizations)
    signals = check_signals(signals)
    check_family(family)
    _check_update(update, updates)
    check_linearization(linearization)
    if not isinstance(standardize, bool):
        raise ValueError(f"standardize must be True or False, got {standardize!r}")
    if encoder_options is not None and not isinstance(encoder_options, dict):
        raise ValueError(
            f"encoder_options must be a dict of the encoder's arguments, got {encoder_options!r}"
        )
    encoder_sizes(encoder, encoder_options or {})
    return {
        "family": family,
        "encoder": encoder,
        "num_steps": num_steps,
        "batch_size": int(batch_size),
        "signals": list(signals),
        "data_plate": data_plate,
        "tasks_plate": tasks_plate,
        "linearization": linearization,
        "num_particles": num_particles,
        "context_size": context_size,
        "rank": rank,
        "encoder_options": dict(encoder_options or {}),
        "seed": seed,
        "update": update,
        "inner_lr": float(inner_lr),
        "max_relinearizations": int(max_relinearizations),
        "standardize": standardize,
    }
