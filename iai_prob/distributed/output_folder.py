"""One output folder, one run: what a batch-inference run writes, and what it refuses.

A run's output folder holds one Parquet file per input partition
(``part.00000.parquet`` …) and a manifest, ``_iai_run.json``, with the run's identity
(its input files by name, size and modification time, the guide's checkpoint by the
SHA-256 of its files, the options that shape the summaries, the number of partitions)
and whether it completed. Before anything is written:

* a missing or empty folder starts a new run;
* a folder whose manifest is this same run resumes it: the partitions already written
  are kept, the others computed (each partition is written to a temporary name and
  renamed into place, so a file that is there is whole);
* anything else (another run, another input, files the library did not write) is
  refused in one line, unless ``overwrite=True``: the new run is then built in a sibling
  folder and swapped in when it completes, so the old result stays whole until the new
  one replaces it.

Nothing stale can survive into a result: a run reads back only the partitions its own
manifest names.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from pathlib import Path

__all__ = ["MANIFEST", "OutputFolder", "part_name", "run_identity", "write_partition"]

MANIFEST = "_iai_run.json"
"""The run's manifest, in its output folder."""

_FORMAT = "iai_prob.batch_inference"


def part_name(index: int) -> str:
    """The file name of partition ``index``'s summaries (its draws, when asked for, are
    the same name with ``.nc``, written before it)."""
    return f"part.{index:05d}.parquet"


def _partition_files(index: int) -> set[str]:
    """Every file partition ``index`` may have: its summaries and its draws."""
    name = part_name(index)
    return {name, name.removesuffix(".parquet") + ".nc"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _input_files(source) -> list:
    """``source``'s local files by name, size and modification time (a remote URL by its
    text: it cannot be listed here)."""
    text = str(source)
    if "://" in text:
        return [text]
    path = Path(text)
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        paths = sorted(Path(p) for p in glob.glob(text))
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def run_identity(source, checkpoint, options: dict, num_partitions: int) -> dict:
    """What makes two runs the same run: the input files, the guide's checkpoint files
    (by content), the options and the number of partitions."""
    stem = Path(str(checkpoint))
    guide = {
        suffix: _sha256(stem.with_suffix(suffix))
        for suffix in (".json", ".safetensors")
        if stem.with_suffix(suffix).exists()
    }
    identity = {
        "format": _FORMAT,
        "input": _input_files(source),
        "guide": guide,
        "options": {key: value for key, value in options.items() if key != "checkpoint"},
        "partitions": num_partitions,
    }
    return json.loads(json.dumps(identity))  # as the manifest reads back (tuples as lists)


def _write_json(path: Path, value: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(temporary, path)


class OutputFolder:
    """The folder a run writes into (see the module docstring).

    :param destination: the output folder the user named.
    :param dict identity: :func:`run_identity` of this run.
    :param bool overwrite: replace a folder that holds something else.
    :raises FileExistsError: the folder holds something else and ``overwrite`` is off.
    """

    def __init__(self, destination, identity: dict, *, overwrite: bool = False):
        self.destination = Path(destination)
        self.identity = identity
        self.replacing = False
        existing = self._existing_identity()
        if existing is None:
            if not overwrite:
                raise FileExistsError(
                    f"output folder {self.destination} is not empty and holds no batch-"
                    "inference run of this input, guide and options; choose an empty "
                    "folder, or pass overwrite=True to replace it"
                )
            self.replacing = True
            self.folder = self.destination.with_name(
                f"{self.destination.name}.iai-new-{os.getpid()}"
            )
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            self.folder = self.destination
        self.folder.mkdir(parents=True, exist_ok=True)
        if existing is False or self.replacing:
            _write_json(self.folder / MANIFEST, {**identity, "complete": False})

    def _existing_identity(self):
        """``False``: a new run here; ``True``: this same run; ``None``: something else."""
        if not self.destination.exists():
            return False
        if not self.destination.is_dir():
            return None
        entries = list(self.destination.iterdir())
        if not entries:
            return False
        manifest = self.destination / MANIFEST
        if not manifest.is_file():
            return None
        try:
            recorded = json.loads(manifest.read_text())
        except (OSError, ValueError):
            return None
        recorded.pop("complete", None)
        ours = {MANIFEST}.union(*(_partition_files(i) for i in range(self.identity["partitions"])))
        ours |= {name + ".tmp" for name in ours}  # an interrupted write's leftovers
        if recorded != self.identity or any(entry.name not in ours for entry in entries):
            return None
        for entry in entries:
            if entry.name.endswith(".tmp"):
                entry.unlink()
        return True

    def path(self, index: int) -> Path:
        """Where partition ``index`` is written."""
        return self.folder / part_name(index)

    def finished(self) -> list[int]:
        """The partitions already written (a resumed run keeps them)."""
        return [i for i in range(self.identity["partitions"]) if self.path(i).exists()]

    def abandon(self) -> None:
        """A failed replacement: remove the folder it was being built in, leaving the
        old result whole (a run into its own folder keeps what it wrote, to resume)."""
        if self.replacing:
            shutil.rmtree(self.folder, ignore_errors=True)

    def complete(self) -> Path:
        """Mark the run complete (swapping a replacement in) and return its folder."""
        _write_json(self.folder / MANIFEST, {**self.identity, "complete": True})
        if self.replacing:
            retired = self.destination.with_name(f"{self.destination.name}.iai-old-{os.getpid()}")
            if self.destination.exists():
                os.replace(self.destination, retired)
            os.replace(self.folder, self.destination)
            shutil.rmtree(retired, ignore_errors=True)
            self.folder = self.destination
        return self.destination


def write_partition(frame, path: str) -> tuple[int, int]:
    """Write one partition's summaries to ``path`` whole (a temporary name renamed into
    place) and return its ``(groups, rows)``."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    frame.to_parquet(temporary, index=False)
    os.replace(temporary, path)
    return len(frame), int(frame["num_points"].sum())
