"""Regenerate ``docs/benchmarks.md``: every benchmark table in one file.

    python benchmarks/run_all.py                  # about 35 minutes on 2 CPU cores
    python benchmarks/run_all.py --quick          # smoke test of every script

Each script runs in its own process (so timings do not share a warm-up), writes its
tables to a temporary file, and the tables are concatenated under a header that names
the machine and this command.
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument("--out", default=str(HERE.parent / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
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
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(sections))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
