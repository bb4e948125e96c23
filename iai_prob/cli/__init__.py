"""The ``iai`` command: train guides, infer posteriors from files, diagnose, benchmark.

Examples::

    iai demo                                         # shipped guide on shipped datasets
    iai pretrained                                   # the shipped guides and their cards
    iai train linear_regression --config '{"dim": 4}' --steps 300 --out runs/lr4
    iai train my_models.py:model --x-dim 3 --steps 300 --out runs/mine
    iai infer linear_regression schools.csv --x x0:x7 --y y --group school --out post.nc
    iai diagnose linear_regression schools.csv --x x0:x7 --y y --group school --out report.html
    iai bench --quick

``iai COMMAND --help`` explains each command. Errors (a missing file, a wrong column,
a checkpoint that does not fit the data) are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from iai_prob.cli import bench, demo, diagnose, infer, pretrained, train
from iai_prob.cli.helptext import HelpFormatter
from iai_prob.refinement_state import RefinementError

__all__ = ["COMMANDS", "main"]

COMMANDS = (demo, train, infer, diagnose, bench, pretrained)
"""The command modules; each has ``add_parser(subparsers)`` and ``run(args)``."""

_NON_FINITE_HINT = (
    "Its float32 arithmetic overflows on values, or products of values, beyond about 3e38: "
    "rescale the columns to moderate values (e.g. divide each by its standard deviation) "
    "or remove the extreme rows, and run again"
)


def _error(args, message: str) -> int:
    """Print ``message`` as one line, ``iai CMD: error: ...``; return exit status 2."""
    print(f"iai {args.command}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iai",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv=None) -> int:
    """Run ``iai`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `torchrun ... -m iai_prob.cli -- train ...`: the rest is iai's
        argv = argv[1:]
    args = _parser().parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        return _error(args, " ".join(str(error).split()) or type(error).__name__)
    except RefinementError as error:  # either backend's
        step = "" if error.step is None else f" at refinement step {error.step}"
        return _error(
            args,
            f"the guide's posterior stopped being finite or positive definite{step}: the data "
            f"are too large for the guide. {_NON_FINITE_HINT}",
        )
    except KeyboardInterrupt:
        print(f"iai {args.command}: interrupted ({shlex.join(argv)})", file=sys.stderr)
        return 130
