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
"""Version of the card schema this iai_prob writes and reads."""
FORMAT = "iai_prob.checkpoint"
_MODEL_PREFIX = "model."


_GUIDE_CARD_KEYS = ("guide", "model", "latent_dim", "feature_dim", "layout")


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


def write_checkpoint(
    path, tensors: dict[str, torch.Tensor], card: dict, *, versioned: bool = False
) -> Path:
    """Write ``tensors`` and ``card`` atomically as ``path.safetensors`` + ``path.json``.

    Each file is replaced atomically, but a crash between the two replacements would
    leave new weights next to the old card (refused by the hash check). With
    ``versioned=True`` the weights go to ``path.<sha256[:16]>.safetensors``, named in the
    card's ``weights_file``; the card's replacement is then the single commit point
    (the previous weights stay until the new card is in place), so the pair on disk is
    always a consistent checkpoint, the old or the new one. Training state uses this.
    """
    stem = _stem(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    if versioned:
        staged = stem.with_name(f"{stem.name}.staged.safetensors")
        _atomic_write(staged, lambda tmp: save_file(tensors, tmp))
        digest = _sha256(staged)
        weights = stem.with_name(f"{stem.name}.{digest[:16]}.safetensors")
        os.replace(staged, weights)
        card = {**card, "weights_file": weights.name}
    else:
        weights = stem.with_suffix(".safetensors")
        _atomic_write(weights, lambda tmp: save_file(tensors, tmp))
        digest = _sha256(weights)
    card = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **card, "sha256": digest}
    text = json.dumps(card, indent=2, sort_keys=True)
    _atomic_write(stem.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
    if versioned:  # the new card is committed: older versions and killed writes' temporaries
        stale = [*stem.parent.glob(f"{stem.name}.*.safetensors")]
        stale += stem.parent.glob(f".{stem.name}.*.tmp")
        for old in stale:
            if old != weights:
                old.unlink(missing_ok=True)
    return weights


def _weights_path(stem: Path, card: dict, card_path: Path) -> Path:
    """The weights file a card names (``weights_file``, a bare file name) or ``stem``'s."""
    name = card.get("weights_file")
    if name is None:
        return stem.with_suffix(".safetensors")
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
        raise CheckpointError(
            f"{card_path} names weights_file {name!r}; it must be a .safetensors file name in "
            "the same folder"
        )
    return stem.with_name(name)


def read_checkpoint(path, device=None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a checkpoint written by :func:`write_checkpoint`."""
    stem = _stem(path)
    card_path = stem.with_suffix(".json")
    if not card_path.exists():
        raise CheckpointError(f"checkpoint file {card_path} does not exist")
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint card {card_path} is not valid JSON: {error}") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise CheckpointError(f"{card_path} is not an iai_prob checkpoint card")
    if card.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(
            f"{card_path} has schema version {card.get('schema_version')!r}; this iai_prob "
            f"reads version {SCHEMA_VERSION}"
        )
    weights = _weights_path(stem, card, card_path)
    if not weights.exists():
        raise CheckpointError(f"checkpoint file {weights} does not exist")
    if card.get("sha256") != _sha256(weights):
        raise CheckpointError(f"{weights} does not match the hash in its card: modified or corrupt")
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
