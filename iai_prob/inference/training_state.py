"""The resumable state of :func:`~iai_prob.inference.fit` and the run it belongs to.

:class:`FitResult` is what a run has done so far (steps, losses, validation history);
it is returned by ``fit`` and written into, and read back from, the training state.

A training folder's ``last.json`` card and the weights file it names hold the trained
modules, the optimizer's state, the best weights by validation score so far (``best.*``)
and the validation history, the step, the losses and the run's identity
(:func:`run_identity`: model, guide configuration, latent layout, tasks, seed,
objective, …). :func:`resume_training` continues a run only if its identity and weight
shapes are the requested ones, else raises
:class:`~iai_prob.training_folder.RunMismatchError` naming the differences; a card of an
earlier version, without an identity, is checked by the settings its budget records
(:func:`~iai_prob.training_folder.saved_identity`).
The card is written with a single commit point (``versioned=True``,
:func:`~iai_prob.inference.checkpoint.write_checkpoint`): a process killed at any
instant leaves the previous state or the new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from iai_prob.guide_card import model_identity
from iai_prob.inference.checkpoint import read_checkpoint, write_checkpoint
from iai_prob.training_folder import (
    RunMismatchError,
    check_same_run,
    find_training_state,
    flat_identity,
    model_run_identity,
    saved_identity,
)
from iai_prob.validation_history import ValidationHistory

__all__ = ["FitResult", "resume_training", "run_identity", "save_training"]

_OPTIMIZER_PREFIX = "optimizer."
_BEST_PREFIX = "best."


@dataclass
class FitResult:
    """What :func:`fit` did: per-step losses, the KL trace where exact, the time, the
    skipped steps, the tasks left out of a step for a non-finite loss, the validation
    history (untrained, scheduled, best and final scores), whether early stopping ended
    the run, and the number of processes that took its last step (``torchrun``'s world
    size; 1 without it)."""

    losses: list[float] = field(default_factory=list)
    kls: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    skipped: int = 0
    dropped_tasks: int = 0
    validation: ValidationHistory = field(default_factory=ValidationHistory)
    stopped_early: bool = False
    world_size: int = 1


def run_identity(guide, source, optimizer, settings: dict) -> dict:
    """What defines a run, flat (:func:`~iai_prob.training_folder.flat_identity`): the
    model, the guide's configuration, layout and sizes, the tasks' identity, the optimizer
    and its learning rate, and ``settings`` (seed, objective, tasks per step, …)."""
    identity = {"kind": "training", "backend": "torch", "tasks": source.identity(), **settings}
    if hasattr(guide, "training_loss"):
        identity["guide"] = {"kind": type(guide).__name__, **guide.config}
    else:
        identity["model"] = model_run_identity(model_identity(guide), guide.model)
        identity["layout"] = guide.layout_signature
        identity["latent_dim"] = guide.refiner.latent_dim
        identity["feature_dim"] = guide.refiner.feature_dim
        identity["guide"] = guide.config
    identity["optimizer"] = type(optimizer).__qualname__
    identity["learning_rate"] = float(optimizer.param_groups[0]["lr"])
    return flat_identity(identity)


def save_training(
    path: Path, trainable, optimizer, result: FitResult, budget, identity, best=None
) -> None:
    """Write the training state ``path`` (``last``): the modules' and the optimizer's
    tensors, the best weights so far (``best``, if any), and a card with the step, losses,
    validation history, budget and run identity."""
    tensors = dict(trainable.state_dict())
    tensors.update({_BEST_PREFIX + name: value for name, value in (best or {}).items()})
    optimizer_state = optimizer.state_dict()
    scalars = {}
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{_OPTIMIZER_PREFIX}{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    card = {
        "kind": "training",
        "step": result.steps,
        "losses": result.losses,
        "kls": result.kls,
        "seconds": result.seconds,
        "skipped": result.skipped,
        "dropped_tasks": result.dropped_tasks,
        "world_size": result.world_size,
        "validation": result.validation.to_card(),
        "optimizer_param_groups": optimizer_state["param_groups"],
        "optimizer_scalars": scalars,
        "budget": budget,
        "run": identity,
    }
    write_checkpoint(path, tensors, card, versioned=True)  # crash-safe: old or new, never half


def resume_training(
    folder: Path, trainable, optimizer, result: FitResult, device, identity
) -> dict | None:
    """Load the run saved in ``folder`` into ``trainable``, ``optimizer`` and ``result``
    if it is this run (``identity``); nothing to load leaves them as they are. Returns the
    best weights by validation so far (``None``: none saved, e.g. a card of an earlier
    version, which also has no validation history).

    :raises RunMismatchError: the folder holds another run (naming the differences), weights
        of other shapes, or a guide without training state (which starting would overwrite).
    """
    last = find_training_state(folder)
    if last is None:
        return None
    tensors, card = read_checkpoint(last, device=device)
    check_same_run(folder, saved_identity(card), identity)
    tensors.pop("rng.torch", None)  # earlier versions' global RNG state: no step reads it now
    weights = {
        k: v for k, v in tensors.items() if not k.startswith((_OPTIMIZER_PREFIX, _BEST_PREFIX))
    }
    best = {k[len(_BEST_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_BEST_PREFIX)}
    expected = {k: list(v.shape) for k, v in trainable.state_dict().items()}
    found = {k: list(v.shape) for k, v in weights.items()}
    differing = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
    if differing:
        raise RunMismatchError(
            folder,
            [(f"weight {k} of shape", found.get(k), expected.get(k)) for k in differing[:2]],
        )
    trainable.load_state_dict(weights)
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith(_OPTIMIZER_PREFIX):
            index, name = key[len(_OPTIMIZER_PREFIX) :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for key, value in card["optimizer_scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": card["optimizer_param_groups"]})
    result.steps, result.losses, result.seconds = card["step"], card["losses"], card["seconds"]
    result.kls = [tuple(kl) for kl in card["kls"]]
    result.skipped = card["skipped"]
    result.dropped_tasks = card.get("dropped_tasks", 0)  # absent in earlier versions
    result.world_size = card.get("world_size", 1)  # earlier versions trained on one process
    result.validation = ValidationHistory.from_card(card.get("validation"))
    return best or None
