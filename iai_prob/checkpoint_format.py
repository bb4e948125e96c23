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
    "write_files",
]

SCHEMA_VERSION = 1
"""Version of the card schema this iai_prob writes and reads."""
FORMAT = "iai_prob.checkpoint"
"""The card's ``format`` field: what marks a JSON file as an iai_prob checkpoint card."""


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
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _commit_card(weights: Path, card_path: Path, card: dict) -> Path:
    card = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **card, "sha256": sha256(weights)}
    text = json.dumps(card, indent=2, sort_keys=True)
    atomic_write(card_path, lambda tmp: Path(tmp).write_text(text))
    return weights


def write_card(path, card: dict) -> Path:
    """Write the card of the checkpoint ``path`` whose weights file exists already."""
    weights, card_path = checkpoint_paths(path)
    return _commit_card(weights, card_path, card)


def write_files(
    path, save_weights: Callable[[str], object], card: dict, *, versioned: bool = False
) -> Path:
    """Write a checkpoint: ``save_weights(temporary_path)`` writes the safetensors file,
    then the card; each file is replaced atomically. Returns the weights' path.

    A crash between the two replacements would leave new weights next to the old card
    (refused by the hash check). With ``versioned=True`` the weights go to
    ``path.<sha256[:16]>.safetensors``, named in the card's ``weights_file``; the card's
    replacement is then the single commit point (the previous weights stay until the
    new card is in place), so the pair on disk is always a consistent checkpoint, the
    old or the new one. Training state uses this.
    """
    weights, card_path = checkpoint_paths(path)
    stem = weights.with_suffix("")
    if versioned:
        staged = stem.with_name(f"{stem.name}.staged.safetensors")
        atomic_write(staged, save_weights)
        weights = stem.with_name(f"{stem.name}.{sha256(staged)[:16]}.safetensors")
        os.replace(staged, weights)
        card = {**card, "weights_file": weights.name}
    else:
        atomic_write(weights, save_weights)
    _commit_card(weights, card_path, card)
    # the new card is committed: remove killed writes' temporaries and older versions
    stale = [*stem.parent.glob(f".{stem.name}.*.tmp")]
    if versioned:
        stale += stem.parent.glob(f"{stem.name}.*.safetensors")
    for old in stale:
        if old != weights:
            old.unlink(missing_ok=True)
    return weights


def _weights_path(default: Path, card: dict, card_path: Path) -> Path:
    """The weights file a card names (``weights_file``, a bare file name) or the default."""
    name = card.get("weights_file")
    if name is None:
        return default
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
        raise CheckpointError(
            f"{card_path} names weights_file {name!r}; it must be a .safetensors file name in "
            "the same folder"
        )
    return default.with_name(name)


def read_card(path) -> tuple[Path, dict]:
    """``(weights path, card)`` after checking the format, version and weights' hash."""
    default, card_path = checkpoint_paths(path)
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
    weights = _weights_path(default, card, card_path)
    if not weights.exists():
        raise CheckpointError(f"checkpoint file {weights} does not exist")
    if card.get("sha256") != sha256(weights):
        raise CheckpointError(f"{weights} does not match the hash in its card: modified or corrupt")
    return weights, card
