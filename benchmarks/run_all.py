"""Regenerate ``docs/benchmarks.md``: every benchmark table in one file.

    python benchmarks/run_all.py                  # about 35 minutes on 2 CPU cores
    python benchmarks/run_all.py --quick          # smoke test of every script, printed
    python benchmarks/run_all.py --quick --out /tmp/bench.md

Each script runs in its own process (so timings do not share a warm-up), writes its
tables to a temporary file, and the tables are concatenated under a header that names
the machine and this command. A full run writes ``docs/benchmarks.md`` (or ``--out``);
a ``--quick`` run's tiny sizes measure nothing worth keeping, so it prints its tables
and writes a file only when given ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPTS = ("linear_regression", "logistic_regression", "gaussian_mixture")
HERE = Path(__file__).resolve().parent


def machine() -> str:
    """One line naming the machine the tables were measured on."""
    import torch

    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.platform()}"
    )


DOCS = HERE.parent / "docs" / "benchmarks.md"
"""Where a full run writes its tables unless given ``--out``."""


def destination(quick: bool, out: str | None) -> Path | None:
    """The file to write: ``out``, else ``docs/benchmarks.md`` for a full run and
    ``None`` (print only) for a quick one."""
    if out is not None:
        return Path(out)
    return None if quick else DOCS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument(
        "--out", help="markdown file (default: docs/benchmarks.md; a --quick run only prints)"
    )
    args = parser.parse_args(argv)
    target = destination(args.quick, args.out)
    command = "python benchmarks/run_all.py" + (" --quick" if args.quick else "")
    sections = [
        "# Benchmarks\n",
        f"Regenerate with `{command}` (from the repository root, after `make test` has "
        "created `.venv`).\n",
        f"- machine: {machine()}",
        f"- date: {datetime.date.today().isoformat()}\n",
    ]
    with tempfile.TemporaryDirectory() as folder:
        for name in SCRIPTS:
            out = Path(folder) / f"{name}.md"
            call = [sys.executable, str(HERE / f"{name}.py"), "--out", str(out)]
            subprocess.run(call + (["--quick"] if args.quick else []), check=True)
            sections.append(out.read_text())
    if target is None:
        print("\n".join(sections))
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(sections))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
