"""The checkpoint format shared by both backends, without torch or JAX.

A checkpoint ``name`` is ``name.safetensors`` (tensors only: nothing runs code on load)
and ``name.json`` (the card: format, schema version, the SHA-256 of the weights, and
whatever the writer adds). :mod:`iai_prob.inference.checkpoint` (PyTorch) and
:mod:`iai_prob.numpyro.checkpoint` (JAX) write and read the same files through these
helpers, so a guide trained in one backend loads in the other.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "CheckpointError",
    "atomic_write",
    "checkpoint_paths",
    "read_card",
    "sha256",
    "write_card",
]

SCHEMA_VERSION = 1
FORMAT = "iai_prob.checkpoint"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, of an unknown version, or for another model."""


def checkpoint_paths(path) -> tuple[Path, Path]:
    """``(weights, card)`` paths of the checkpoint ``path`` (with or without suffix)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(temporary_path)`` and move the result to ``path`` atomically."""
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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_card(path, card: dict) -> Path:
    """Write the card of the checkpoint ``path`` whose weights file exists already."""
    weights, card_path = checkpoint_paths(path)
    card = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **card, "sha256": sha256(weights)}
    text = json.dumps(card, indent=2, sort_keys=True)
    atomic_write(card_path, lambda tmp: Path(tmp).write_text(text))
    return weights


def read_card(path) -> tuple[Path, dict]:
    """``(weights path, card)`` after checking the format, version and weights' hash."""
    weights, card_path = checkpoint_paths(path)
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
    if card.get("sha256") != sha256(weights):
        raise CheckpointError(f"{weights} does not match the hash in its card: modified or corrupt")
    return weights, card
