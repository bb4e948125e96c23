"""Checkpoints: safetensors weights plus a JSON card, written atomically, never pickled.

A checkpoint ``name`` is two files, ``name.safetensors`` (tensors only: nothing runs
code on load) and ``name.json`` (the card: schema version, guide configuration,
latent layout, the model it was trained for, the SHA-256 of the weights, and whatever
the trainer adds: budget, command, measured quality). Loading refuses an unknown
schema version, weights that do not match the card's hash, a card whose guide
configuration or dimensions do not fit its weights, and a model whose name,
configuration or latent layout differs from the card's, always with
:class:`CheckpointError`.

Threat model: loading parses JSON and safetensors only, so a checkpoint can never run
code (no pickle, no ``torch.load``). The hash catches corruption and edits of the
weights alone; someone able to rewrite both files can change the weights but not run
code; to pin a checkpoint, compare the card's ``sha256`` with a trusted value.

Versioned checkpoints (``versioned=True``, used for training state) name their weights
file in the card, so that a process killed at any instant leaves the previous or the
new checkpoint, never a mixture (see :func:`write_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from iai_prob.checkpoint_format import (
    FORMAT,
    SCHEMA_VERSION,
    CheckpointError,
    read_card,
    write_files,
)

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "CheckpointError",
    "learnable_model",
    "load_guide",
    "model_identity",
    "read_checkpoint",
    "save_guide",
    "write_checkpoint",
]

_MODEL_PREFIX = "model."
_GUIDE_CARD_KEYS = ("guide", "model", "latent_dim", "feature_dim", "layout")


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
    try:
        tensors = load_file(weights, device=str(device) if device is not None else "cpu")
    except Exception as error:  # safetensors' own parse errors (a file that hashes right)
        raise CheckpointError(f"{weights} is not a valid safetensors file: {error}") from None
    return tensors, card


def model_identity(guide) -> dict:
    """What the card records about the model: the task family and its configuration."""
    if guide.family is not None:
        return {"family": guide.family.name, "config": guide.family.config()}
    model = guide.model
    model = getattr(model, "fn", model)  # unwrap a poutine messenger around the model
    return {"callable": getattr(model, "__qualname__", type(model).__name__)}


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
    full_card = {
        "kind": "IterativeAmortizedGuide",
        "guide": guide.config,
        "latent_dim": refiner.latent_dim,
        "feature_dim": refiner.feature_dim,
        "layout": guide.layout_signature,
        "model": model_identity(guide),
        "learned_model": learned is not None,
        **card,
    }
    return write_checkpoint(path, tensors, full_card)


def load_guide(path, model, *, device=None):
    """Rebuild a guide from :func:`save_guide` output for ``model`` (refuses another model)."""
    from iai_prob.inference.guide import IterativeAmortizedGuide

    tensors, card = read_checkpoint(path, device=device)
    if card.get("kind") != "IterativeAmortizedGuide":
        raise CheckpointError(
            f"{path} holds a {card.get('kind')!r}, not an IterativeAmortizedGuide"
        )
    missing_keys = [key for key in _GUIDE_CARD_KEYS if key not in card]
    if missing_keys or not isinstance(card["guide"], dict):
        raise CheckpointError(f"checkpoint card of {path} lacks {missing_keys or ['guide']}")
    try:
        guide = IterativeAmortizedGuide(model, **card["guide"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} has an invalid guide config: {error}") from None
    expected, found = card["model"], model_identity(guide)
    if expected != found:
        raise CheckpointError(
            f"checkpoint {path} was trained for model {expected}, not for {found}"
        )
    model_keys = [k for k in tensors if k.startswith(_MODEL_PREFIX)]
    model_tensors = {k[len(_MODEL_PREFIX) :]: tensors.pop(k) for k in model_keys}
    try:
        refiner = guide.build(card["latent_dim"], card["feature_dim"])
        missing, unexpected = refiner.load_state_dict(tensors, strict=False)
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"checkpoint {path}: the weights do not fit the guide its card describes "
            f"(latent_dim={card['latent_dim']!r}, feature_dim={card['feature_dim']!r}): "
            f"{str(error).splitlines()[0]}"
        ) from None
    guide.layout_signature = card["layout"]
    learned = learnable_model(guide)
    if card.get("learned_model", False) != (learned is not None):
        raise CheckpointError(
            f"checkpoint {path} {'holds' if card.get('learned_model') else 'has no'} learned "
            f"model weights but the model {'has none' if learned is None else 'has some'}"
        )
    if learned is not None:
        learned.load_state_dict(model_tensors)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit the guide: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}"
        )
    if device is not None:
        refiner.to(device)
    guide.card = card
    return guide
