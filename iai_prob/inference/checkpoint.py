"""Checkpoints: safetensors weights plus a JSON card, written atomically, never pickled.

A checkpoint ``name`` is two files, ``name.safetensors`` (tensors only: nothing runs
code on load) and ``name.json`` (the card: schema version, guide configuration,
latent layout, the model it was trained for, the SHA-256 of the weights, and whatever
the trainer adds: budget, command, measured quality). Loading refuses an unknown
schema version, weights that do not match the card's hash, and a model whose name,
configuration or latent layout differs from the card's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from iai_prob.checkpoint_format import (
    FORMAT,
    SCHEMA_VERSION,
    CheckpointError,
    atomic_write,
    checkpoint_paths,
    read_card,
    write_card,
)

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "CheckpointError",
    "load_guide",
    "model_identity",
    "read_checkpoint",
    "save_guide",
    "write_checkpoint",
]


def write_checkpoint(path, tensors: dict[str, torch.Tensor], card: dict) -> Path:
    """Write ``tensors`` and ``card`` atomically as ``path.safetensors`` + ``path.json``."""
    weights, _ = checkpoint_paths(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(weights, lambda tmp: save_file(tensors, tmp))
    return write_card(path, card)


def read_checkpoint(path, device=None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a checkpoint written by :func:`write_checkpoint`."""
    weights, card = read_card(path)
    tensors = load_file(weights, device=str(device) if device is not None else "cpu")
    return tensors, card


def model_identity(guide) -> dict:
    """What the card records about the model: the task family and its configuration."""
    if guide.family is not None:
        return {"family": guide.family.name, "config": guide.family.config()}
    model = guide.model
    model = getattr(model, "fn", model)  # unwrap a poutine messenger around the model
    return {"callable": getattr(model, "__qualname__", type(model).__name__)}


def save_guide(guide, path, **card) -> Path:
    """Save a built guide's weights and card (``card`` adds e.g. budget and quality)."""
    refiner = guide._require_refiner()
    full_card = {
        "kind": "IterativeAmortizedGuide",
        "guide": guide.config,
        "latent_dim": refiner.latent_dim,
        "feature_dim": refiner.feature_dim,
        "layout": guide.layout_signature,
        "model": model_identity(guide),
        **card,
    }
    return write_checkpoint(path, refiner.state_dict(), full_card)


def load_guide(path, model, *, device=None):
    """Rebuild a guide from :func:`save_guide` output for ``model`` (refuses another model)."""
    from iai_prob.inference.guide import IterativeAmortizedGuide

    tensors, card = read_checkpoint(path, device=device)
    if card.get("kind") != "IterativeAmortizedGuide":
        raise CheckpointError(
            f"{path} holds a {card.get('kind')!r}, not an IterativeAmortizedGuide"
        )
    guide = IterativeAmortizedGuide(model, **card["guide"])
    expected, found = card["model"], model_identity(guide)
    if expected != found:
        raise CheckpointError(
            f"checkpoint {path} was trained for model {expected}, not for {found}"
        )
    refiner = guide.build(card["latent_dim"], card["feature_dim"])
    guide.layout_signature = card["layout"]
    missing, unexpected = refiner.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit the guide: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}"
        )
    if device is not None:
        refiner.to(device)
    guide.card = card
    return guide
