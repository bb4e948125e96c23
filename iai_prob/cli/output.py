"""The file a command writes (``--out``), checked before any work starts.

``iai infer`` and ``iai diagnose`` spend seconds to minutes before they write; an
``--out`` they cannot write must fail first, in one line, not after the work. Refused:
a name without the expected suffix, an existing directory, a path under a file
(``notes.txt/post.nc``), an existing read-only file, and a folder where no file can be
created. Whether one can is found by creating and removing an empty file there (in the
nearest existing folder when the target's does not exist yet): permission bits do not
tell for root, a read-only file system, or ``/proc`` and ``/sys``. Missing folders are
fine: they are created when the file is written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["check_output_file"]


def check_output_file(out: str, suffixes: tuple[str, ...], kind: str) -> Path:
    """``Path(out)`` if a file of ``kind`` (``"a netCDF file"``) can be written there, else
    a one-line ``ValueError`` saying why and what to give instead."""
    if not out.endswith(suffixes):
        raise ValueError(f"--out must name {kind} ending in {suffixes[0]}, got {out!r}")
    path = Path(out)
    if path.is_dir():
        raise ValueError(
            f"--out {out!r} is a directory; name {kind} in it, e.g. "
            f"{path / ('posterior' + suffixes[0])}"
        )
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"--out {out!r} lies under {str(folder)!r}, which is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".iai-write-test-")
    except OSError as error:
        raise ValueError(
            f"--out {out!r}: cannot create a file in {str(folder)!r} ({error.strerror}); "
            "name a file in a folder you can write in"
        ) from None
    os.close(handle)
    os.remove(probe)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"--out {out!r} exists and is read-only; remove it or name another file")
    return path
