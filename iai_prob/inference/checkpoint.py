"""Checkpoints: safetensors weights plus a JSON card, written atomically, never pickled.

A checkpoint ``name`` is two files, ``name.safetensors`` (tensors only: nothing runs
code on load) and ``name.json`` (the card: schema version, guide configuration,
latent layout, the model it was trained for, the SHA-256 of the weights, and whatever
the trainer adds: budget, command, measured quality). Loading refuses an unknown
schema version, weights that do not match the card's hash, and a model whose name,
configuration or latent layout differs from the card's.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointError",
    "learnable_model",
    "load_guide",
    "model_identity",
    "read_checkpoint",
    "save_guide",
    "write_checkpoint",
]

SCHEMA_VERSION = 1
FORMAT = "iai_prob.checkpoint"
_MODEL_PREFIX = "model."


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, of an unknown version, or for another model."""


def _stem(path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checkpoint(path, tensors: dict[str, torch.Tensor], card: dict) -> Path:
    """Write ``tensors`` and ``card`` atomically as ``path.safetensors`` + ``path.json``."""
    stem = _stem(path)
    weights = stem.with_suffix(".safetensors")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic_write(weights, lambda tmp: save_file(tensors, tmp))
    card = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **card, "sha256": _sha256(weights)}
    text = json.dumps(card, indent=2, sort_keys=True)
    _atomic_write(stem.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
    return weights


def read_checkpoint(path, device=None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a checkpoint written by :func:`write_checkpoint`."""
    stem = _stem(path)
    weights, card_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for file in (weights, card_path):
        if not file.exists():
            raise CheckpointError(f"checkpoint file {file} does not exist")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"checkpoint card {card_path} is not valid JSON: {error}") from None
    if card.get("format") != FORMAT:
        raise CheckpointError(f"{card_path} is not an iai_prob checkpoint card")
    if card.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(
            f"{card_path} has schema version {card.get('schema_version')!r}; this iai_prob "
            f"reads version {SCHEMA_VERSION}"
        )
    if card.get("sha256") != _sha256(weights):
        raise CheckpointError(f"{weights} does not match the hash in its card: modified or corrupt")
    tensors = load_file(weights, device=str(device) if device is not None else "cpu")
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
    guide = IterativeAmortizedGuide(model, **card["guide"])
    expected, found = card["model"], model_identity(guide)
    if expected != found:
        raise CheckpointError(
            f"checkpoint {path} was trained for model {expected}, not for {found}"
        )
    refiner = guide.build(card["latent_dim"], card["feature_dim"])
    guide.layout_signature = card["layout"]
    model_keys = [k for k in tensors if k.startswith(_MODEL_PREFIX)]
    model_tensors = {k[len(_MODEL_PREFIX) :]: tensors.pop(k) for k in model_keys}
    learned = learnable_model(guide)
    if card.get("learned_model", False) != (learned is not None):
        raise CheckpointError(
            f"checkpoint {path} {'holds' if card.get('learned_model') else 'has no'} learned "
            f"model weights but the model {'has none' if learned is None else 'has some'}"
        )
    if learned is not None:
        learned.load_state_dict(model_tensors)
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
