"""``iai bench``: the benchmark tables of ``docs/benchmarks.md``.

Runs ``benchmarks/run_all.py`` of a source checkout (the benchmarks are not part of the
installed package): every script in its own process, tables concatenated into
``docs/benchmarks.md`` of that checkout or ``--out``. The full run takes about 35
minutes on 2 CPU cores; ``--quick`` is a smoke test of every script (tiny sizes, a few
minutes) that prints its tables and writes a file only with ``--out``, so it never
replaces the measured tables.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from iai_prob.cli.helptext import HelpFormatter

__all__ = ["add_parser", "find_benchmarks", "run"]


def add_parser(commands) -> None:
    """Register ``iai bench``."""
    parser = commands.add_parser(
        "bench",
        help="run the benchmark tables (benchmarks/run_all.py)",
        description=__doc__.split("\n\n", 1)[1],
        epilog="examples:\n  iai bench --quick\n  iai bench --quick --out /tmp/bench.md\n"
        "  iai bench",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument(
        "--out",
        help="markdown file (default: docs/benchmarks.md of the checkout; --quick only prints)",
    )
    parser.add_argument(
        "--root",
        help="source checkout holding benchmarks/ (default: the working directory, else the "
        "package's checkout)",
    )
    parser.set_defaults(run=run)


def find_benchmarks(root: str | None = None) -> Path:
    """``benchmarks/run_all.py`` under ``root``, the working directory or the package's
    checkout; a one-line ``FileNotFoundError`` when there is none."""
    candidates = [Path(root)] if root else [Path.cwd(), Path(__file__).resolve().parents[2]]
    for folder in candidates:
        script = folder / "benchmarks" / "run_all.py"
        if script.is_file():
            return script
    raise FileNotFoundError(
        f"no benchmarks/run_all.py under {', '.join(map(str, candidates))}: iai bench runs from "
        "a source checkout (git clone, then iai bench --root CHECKOUT)"
    )


def run(args) -> int:
    """Run the benchmark script and return its exit status."""
    script = find_benchmarks(args.root)
    command = [sys.executable, str(script)]
    if args.quick:
        command.append("--quick")
    if args.out:
        command += ["--out", args.out]
    return subprocess.run(command, cwd=script.parents[1]).returncode
