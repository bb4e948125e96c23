"""Checkpoints: safetensors weights plus a JSON card, written atomically, never pickled.

A checkpoint ``name`` is two files, ``name.safetensors`` (tensors only: nothing runs
code on load) and ``name.json`` (the card: schema version, guide configuration,
latent layout, the model it was trained for, the SHA-256 of the weights and of the card,
and whatever the trainer adds: budget, command, measured quality). Loading refuses an
unknown schema version, a card or weights that do not match their hashes, a card whose
fields have the wrong type, whose guide configuration or dimensions do not fit its
weights (checked on the ``meta`` device against the safetensors header, before anything
is allocated), and a model whose name, configuration or latent layout differs from the
card's, always with :class:`CheckpointError` (see :mod:`iai_prob.guide_card`).

Threat model: loading parses JSON and safetensors only, so a checkpoint can never run
code (no pickle, no ``torch.load``), and the model is the caller's, never a name taken
from the card. The hashes catch corruption and edits of one file; someone able to
rewrite both files can change the weights but not run code; to pin a checkpoint,
compare the card's ``card_sha256`` with a trusted value.

The guide depends on this module, never the other way: :func:`save_guide` and
:func:`restore_guide` read and fill a guide they are handed, and
:meth:`IterativeAmortizedGuide.load <iai_prob.inference.IterativeAmortizedGuide.load>`
(with :func:`~iai_prob.inference.guide.load_guide` and
:func:`~iai_prob.inference.guide.load_family_guide`) builds the guide between
:func:`~iai_prob.guide_card.read_guide_checkpoint` and :func:`restore_guide`.

Versioned checkpoints (``versioned=True``, used for training state) name their weights
file in the card, so that a process killed at any instant leaves the previous or the
new checkpoint, never a mixture (see :func:`write_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.distributions import biject_to

from iai_prob.checkpoint_format import (
    FORMAT,
    SCHEMA_VERSION,
    CheckpointError,
    read_card,
    write_files,
)
from iai_prob.guide_card import (
    CheckedCheckpoint,
    check_family_layout,
    check_finite_weights,
    check_model_identity,
    check_weight_shapes,
    new_guide_card,
)

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "CheckpointError",
    "family_of_checkpoint",
    "learnable_model",
    "read_checkpoint",
    "restore_guide",
    "save_guide",
    "write_checkpoint",
]

_MODEL_PREFIX = "model."


def write_checkpoint(
    path, tensors: dict[str, torch.Tensor], card: dict, *, versioned: bool = False
) -> Path:
    """Write ``tensors`` and ``card`` atomically as ``path.safetensors`` + ``path.json``
    (``versioned``: crash-safe training state, see
    :func:`iai_prob.checkpoint_format.write_files`)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return write_files(path, lambda tmp: save_file(tensors, tmp), card, versioned=versioned)


def read_checkpoint(path, device=None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a checkpoint written by :func:`write_checkpoint`."""
    weights, card = read_card(path)
    return _load_tensors(weights, device), card


def _load_tensors(weights: Path, device) -> dict[str, torch.Tensor]:
    try:
        return load_file(weights, device=str(device) if device is not None else "cpu")
    except Exception as error:  # safetensors' own parse errors (a file that hashes right)
        raise CheckpointError(f"{weights} is not a valid safetensors file: {error}") from None


def learnable_model(guide):
    """The model's learned part, an :class:`torch.nn.Module` (explicit regime), or ``None``.

    It is the guide's task family if that is a module, else the model itself or the
    object it is a method of, if a module with parameters.
    """
    model = guide.model
    for candidate in (guide.family, model, getattr(model, "__self__", None)):
        if isinstance(candidate, torch.nn.Module) and any(True for _ in candidate.parameters()):
            return candidate
    return None


def _prefixed(module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in module.state_dict().items()}


def save_guide(guide, path, **card) -> Path:
    """Save a built guide's weights and card (``card`` adds e.g. budget and quality).

    A learned model (the decoder ``γ`` of the explicit regime, :func:`learnable_model`)
    is saved with it under the prefix ``model.``.
    """
    refiner = guide._require_refiner()
    tensors = dict(refiner.state_dict())
    learned = learnable_model(guide)
    if learned is not None:
        tensors.update(_prefixed(learned, _MODEL_PREFIX))
    full_card = new_guide_card(guide, refiner, learned_model=learned is not None, **card)
    return write_checkpoint(path, tensors, full_card)


def _shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {f"{prefix}{k}": tuple(v.shape) for k, v in module.state_dict().items()}


def family_of_checkpoint(checked: CheckedCheckpoint):
    """The task family the card of a checked checkpoint
    (:func:`~iai_prob.guide_card.read_guide_checkpoint`) names, built first on the
    ``meta`` device (nothing allocated) and checked against the card's layout and the
    weights, so a tampered configuration (``dim`` 10⁹) is refused before it sizes
    anything."""
    from iai_prob.models import get_family

    path, identity = checked.path, checked.card["model"]
    if "family" not in identity:
        raise CheckpointError(
            f"checkpoint {path} was trained for the model {identity.get('callable')!r}, not a "
            "task family: load it with load_guide(path, model)"
        )

    def family():
        try:
            return get_family(identity["family"], **identity["config"])
        except (TypeError, ValueError) as error:
            raise CheckpointError(
                f"checkpoint {path} names an invalid task family: {error}"
            ) from None

    with torch.device("meta"):
        probe = family()
        check_family_layout(checked.card, probe, biject_to, str(path))
        if isinstance(probe, torch.nn.Module):
            expected = _shapes(probe, _MODEL_PREFIX)
            found = {k: v for k, v in checked.shapes.items() if k in expected}
            check_weight_shapes(expected, found, str(path))
    return family()


def restore_guide(guide, checked: CheckedCheckpoint, *, device=None):
    """Fill ``guide``, built from ``checked.card["guide"]`` for the caller's model, with
    the checkpoint's weights and return it (see
    :meth:`~iai_prob.inference.IterativeAmortizedGuide.load`).

    Everything the card says is checked before it is acted on: the model's identity and
    (for a task family) latent layout, and the shapes of the guide it describes, built on
    the ``meta`` device, against the safetensors header; only then are the weights read
    (and checked finite) and the refiner built.
    """
    path, card = checked.path, checked.card
    check_model_identity(guide, checked, biject_to)
    learned = learnable_model(guide)
    if card.get("learned_model", False) != (learned is not None):
        raise CheckpointError(
            f"checkpoint {path} {'holds' if card.get('learned_model') else 'has no'} learned "
            f"model weights but the model {'has none' if learned is None else 'has some'}"
        )
    try:
        with torch.device("meta"):
            expected_shapes = _shapes(guide.build(card["latent_dim"], card["feature_dim"]))
    except (TypeError, ValueError, RuntimeError) as error:  # RuntimeError: sizes overflow
        message = str(error).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} has an invalid guide config: {message}") from None
    if learned is not None:
        expected_shapes.update(_shapes(learned, _MODEL_PREFIX))
    check_weight_shapes(expected_shapes, checked.shapes, str(path))
    tensors = _load_tensors(checked.weights, device)
    check_finite_weights(
        {name: bool(torch.isfinite(value).all()) for name, value in tensors.items()}, str(path)
    )
    model_keys = [k for k in tensors if k.startswith(_MODEL_PREFIX)]
    model_tensors = {k[len(_MODEL_PREFIX) :]: tensors.pop(k) for k in model_keys}
    refiner = guide.build(card["latent_dim"], card["feature_dim"])
    refiner.load_state_dict(tensors)
    if learned is not None:
        learned.load_state_dict(model_tensors)
    guide.layout_signature = card["layout"]
    if device is not None:
        refiner.to(device)
    guide.card = card
    return guide
