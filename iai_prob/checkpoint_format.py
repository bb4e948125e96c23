"""The checkpoint format shared by both backends, without torch or JAX.

A checkpoint ``name`` is ``name.safetensors`` (tensors only: nothing runs code on load)
and ``name.json`` (the card: format, schema version, the SHA-256 of the weights, the
SHA-256 of the card itself, and whatever the writer adds).
:mod:`iai_prob.inference.checkpoint` (PyTorch) and :mod:`iai_prob.numpyro.checkpoint`
(JAX) write and read the same files through these helpers, so a guide trained in one
backend loads in the other.

Reading is all-or-nothing: :func:`read_card` checks the card's size, JSON, format,
schema version, its own hash (``card_sha256``: the canonical JSON of every other field,
the weights' ``sha256`` included, so one value covers card and weights together) and the
weights' hash before it returns anything; :func:`tensor_shapes` reads the safetensors
header only (names, dtypes, shapes), so that sizes named by a card can be checked against
the weights before anything is allocated. No field of a card is ever imported or run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "FLOAT_DTYPES",
    "FORMAT",
    "SCHEMA_VERSION",
    "CheckpointError",
    "atomic_write",
    "card_sha256",
    "checkpoint_paths",
    "read_card",
    "sha256",
    "tensor_shapes",
    "write_card",
    "write_files",
]

SCHEMA_VERSION = 2
"""Version of the card schema this iai_prob writes (2: the card carries ``card_sha256``)."""
READABLE_SCHEMA_VERSIONS = (1, 2)
"""Versions this iai_prob reads; a version-1 card (no ``card_sha256``) is checked by the
weights' hash and the schema only."""
MAX_CARD_BYTES = 1 << 20
"""A card is a few kilobytes; a larger file is refused before it is parsed."""
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


def card_sha256(card: dict) -> str:
    """The SHA-256 of the canonical JSON of ``card`` without its ``card_sha256`` field
    (sorted keys, no whitespace, ASCII): since the card holds the weights' ``sha256``,
    this one value covers the card and the weights together."""
    fields = {key: value for key, value in card.items() if key != "card_sha256"}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _commit_card(weights: Path, card_path: Path, card: dict) -> Path:
    card = {key: value for key, value in card.items() if key != "card_sha256"}
    card = {"format": FORMAT, **card, "schema_version": SCHEMA_VERSION, "sha256": sha256(weights)}
    card["card_sha256"] = card_sha256(card)
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
        # a name of this write's own: two writers never move each other's weights
        staged = stem.with_name(f"{stem.name}.staged-{os.urandom(8).hex()}.safetensors")
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


def _parse_card(card_path: Path) -> dict:
    """The card's JSON object, refused when too large, not UTF-8 JSON, or not a card."""
    if not card_path.is_file():
        raise CheckpointError(f"checkpoint file {card_path} does not exist")
    size = card_path.stat().st_size
    if size > MAX_CARD_BYTES:
        raise CheckpointError(
            f"checkpoint card {card_path} is {size:,} bytes; a card is at most "
            f"{MAX_CARD_BYTES:,} bytes"
        )
    try:
        card = json.loads(card_path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as error:  # bad JSON or UTF-8, a 5,000-digit int
        raise CheckpointError(f"checkpoint card {card_path} is not valid JSON: {error}") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise CheckpointError(f"{card_path} is not an iai_prob checkpoint card")
    return card


def read_card(path) -> tuple[Path, dict]:
    """``(weights path, card)`` after checking the card's size, JSON, format, schema
    version and own hash, and the weights' hash; nothing in the card is acted on before."""
    default, card_path = checkpoint_paths(path)
    card = _parse_card(card_path)
    version = card.get("schema_version")
    if type(version) is not int or version not in READABLE_SCHEMA_VERSIONS:
        raise CheckpointError(
            f"{card_path} has schema version {version!r}; this iai_prob reads versions "
            f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}"
        )
    if version >= 2 and card.get("card_sha256") != card_sha256(card):
        raise CheckpointError(
            f"{card_path} does not match its card_sha256: the card was edited or is corrupt"
        )
    weights = _weights_path(default, card, card_path)
    if not weights.is_file():
        raise CheckpointError(f"checkpoint file {weights} does not exist")
    if weights.resolve().parent != card_path.resolve().parent:
        raise CheckpointError(
            f"checkpoint file {weights} leads outside the folder of its card (a link to "
            f"{weights.resolve()}); weights must lie beside their card"
        )
    if card.get("sha256") != sha256(weights):
        raise CheckpointError(f"{weights} does not match the hash in its card: modified or corrupt")
    return weights, card


FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
"""The safetensors dtypes of a guide's weights."""


def tensor_shapes(weights: Path, *, floating: bool = False) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a safetensors file, read from its header only
    (nothing is allocated for the tensors themselves); with ``floating``, a tensor stored
    in another dtype than :data:`FLOAT_DTYPES` (int8, bool, complex) is refused."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="numpy") as handle:
            slices = {name: handle.get_slice(name) for name in handle.keys()}  # noqa: SIM118
            shapes = {name: tuple(piece.get_shape()) for name, piece in slices.items()}
            dtypes = {name: piece.get_dtype() for name, piece in slices.items()}
    except Exception as error:  # safetensors' own parse errors (a file that hashes right)
        raise CheckpointError(f"{weights} is not a valid safetensors file: {error}") from None
    odd = {name: dtype for name, dtype in dtypes.items() if dtype not in FLOAT_DTYPES}
    if floating and odd:
        name, dtype = next(iter(sorted(odd.items())))
        raise CheckpointError(
            f"{weights}: tensor {name!r} is stored as {dtype}; a guide's weights are floating "
            f"point ({', '.join(FLOAT_DTYPES)})"
        )
    return shapes
