"""``iai diagnose``: the HTML diagnostics report of a guide on a CSV or Parquet file.

Reads the data like ``iai infer`` (same CHECKPOINT, ``--x``, ``--y``, ``--passes``) and
writes :func:`iai_prob.diagnostics.report`: whether the guide matches the model's
posterior (PSIS k̂ of the importance weights), whether the model fits the data (the
posterior predictive check and PSIS-LOO's p_loo, per dataset), the posterior, the ELBO
along the refinement steps, simulation-based calibration on datasets simulated from the
checkpoint's task family, and optionally a comparison with NUTS (``--nuts``, one
dataset). The file is self-contained: open it in any browser.

The data are held in memory (the report evaluates the model on every row). With
``--group COL`` the report covers a batch of groups of one size: ``--groups A B C``
names them, each name a separate argument written exactly as in the file (spaces and
commas included, quoted for the shell; one name gives the single-dataset report),
otherwise the first ``--max-groups`` groups of the most common size are taken (the
report says which, and how many it left out). Group values and column names label the
report's tables.
"""

from __future__ import annotations

import sys

from iai_prob.checks import check_positive_int
from iai_prob.cli.helptext import HelpFormatter
from iai_prob.cli.loading import add_data_arguments, check_data_arguments
from iai_prob.cli.output import check_output_file

__all__ = ["add_parser", "check_options", "describe_selection", "run", "select_groups"]

EXAMPLES = """examples:
  iai diagnose linear_regression schools.csv --x x0:x7 --y y --group school --out report.html
  iai diagnose linear_regression schools.csv --x x0:x7 --y y --group school --groups s003 \\
      --nuts --out s003.html
  iai diagnose linear_regression schools.csv --x x0:x7 --y y --group school \\
      --groups s003 s017 "St. Mary's, Leeds" --out three.html
  iai diagnose runs/mine data.parquet --x a b c --y target --sbc-datasets 0 --out report.html
"""


def add_parser(commands) -> None:
    """Register ``iai diagnose``."""
    parser = commands.add_parser(
        "diagnose",
        help="HTML diagnostics report (PSIS k̂, PPC, LOO, refinement, SBC, NUTS)",
        description=__doc__.split("\n\n", 1)[1],
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--groups",
        nargs="+",
        help="group values to diagnose, all of one size, each a separate argument written "
        "exactly as in the file (default: the first --max-groups groups of the most "
        "common size)",
    )
    parser.add_argument(
        "--max-groups", type=int, default=16, help="groups diagnosed when --groups is unset"
    )
    parser.add_argument("--out", required=True, help="the HTML file (.html) to write")
    parser.add_argument(
        "--sbc-datasets",
        type=int,
        default=100,
        help="datasets simulated from the task family for simulation-based calibration; 0 skips it",
    )
    parser.add_argument("--nuts", action="store_true", help="compare with Pyro NUTS (one dataset)")
    parser.add_argument(
        "--title", help="title of the report (default: 'iai diagnose CHECKPOINT DATA')"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the posterior draws, SBC and NUTS"
    )
    parser.set_defaults(run=run)


def _check_names(names) -> None:
    """Refuse an empty name or a name given twice in ``--groups``."""
    if any(not name for name in names):
        raise ValueError("--groups: an empty name; a group key is never empty")
    repeated = sorted({name for name in names if names.count(name) > 1}, key=names.index)
    if repeated:
        raise ValueError(f"--groups: {repeated[0]!r} is named twice; name each group once")


def select_groups(data, groups: list[str] | None, max_groups: int):
    """Indices of the groups to diagnose: ``groups`` by name, verbatim (all of one size),
    or the first ``max_groups`` of the most common size."""
    import numpy as np

    keys = [str(k) for k in data.keys]
    if groups:
        names = list(groups)
        _check_names(names)
        position = {key: index for index, key in enumerate(keys)}
        missing = [name for name in names if name not in position]
        if missing:
            hint = ""
            if "," in missing[0] and all(p in position for p in missing[0].split(",")):
                hint = "; name groups as separate arguments: --groups " + " ".join(
                    missing[0].split(",")
                )
            raise ValueError(f"--groups: no group {missing[0]!r} (first groups: {keys[:5]}){hint}")
        indices = np.array([position[name] for name in names])
        sizes = sorted({int(data.sizes[i]) for i in indices})
        if len(sizes) > 1:
            raise ValueError(
                f"--groups: a report covers groups of one size; these have sizes {sizes}"
            )
        return indices
    check_positive_int("--max-groups", max_groups)
    values, counts = np.unique(data.sizes, return_counts=True)
    size = values[np.argmax(counts)]
    return np.flatnonzero(data.sizes == size)[:max_groups]


def _shown(key: str) -> str:
    """``key`` as written, quoted when spaces at its ends or a comma would hide where it
    begins and ends in a list."""
    return repr(key) if key != key.strip() or "," in key else key


def describe_selection(data, indices, *, named: bool, source: str) -> str:
    """The report's sentence on which groups of ``source`` it covers and which it left out."""
    size = int(data.sizes[indices[0]])
    total = len(data.keys)
    of_size = int((data.sizes == size).sum())
    shown = ", ".join(_shown(str(data.keys[i])) for i in indices[:10])
    shown += f", … ({len(indices) - 10} more)" if len(indices) > 10 else ""
    if named:
        what = f"{len(indices)} group(s) of {size} rows named with --groups: {shown}"
    elif len(indices) < of_size:
        what = (
            f"only the first {len(indices)} of the {of_size} groups of {size} rows (the most "
            f"common size; raise --max-groups or name groups with --groups): {shown}"
        )
    else:
        what = f"the {of_size} groups of {size} rows, the most common size: {shown}"
    left = total - len(indices)
    if not left:
        return f"{source}: {what}; every group of the file."
    return f"{source}: {what}; {left} of its {total} groups are not in this report."


def check_options(args) -> None:
    """``iai diagnose``'s numeric options, ``--groups`` and ``--nuts`` (one dataset), each
    refused in one line naming the option."""
    check_data_arguments(args)
    check_positive_int("--max-groups", args.max_groups)
    if args.sbc_datasets != 0 and args.sbc_datasets < 2:
        raise ValueError(
            f"--sbc-datasets must be 0 (no simulation-based calibration) or an integer ≥ 2, "
            f"got {args.sbc_datasets}"
        )
    if args.groups is not None:
        if args.group is None:
            raise ValueError("--groups needs --group COL")
        _check_names(args.groups)
    if args.nuts and args.group is not None:
        one = len(args.groups) == 1 if args.groups is not None else args.max_groups == 1
        if not one:
            raise ValueError(
                "--nuts compares one dataset: with --group, name one group (--groups NAME) "
                "or give --max-groups 1"
            )


def run(args) -> int:
    """Read the data, write the report, print its verdicts."""
    from iai_prob.cli.infer import check_data, data_columns, explained_observation_errors
    from iai_prob.cli.loading import load_checkpoint
    from iai_prob.diagnostics import report
    from iai_prob.io import Columns, Table, minibatches, observation_dtype, read_groups

    check_output_file(args.out, (".html", ".htm"), "an HTML file")
    check_options(args)
    table = Table(args.data, chunk_rows=args.chunk_rows)
    x_columns, y_columns = data_columns(args, table)
    guide = load_checkpoint(args.checkpoint, model=args.model)
    columns = Columns(tuple(x_columns), tuple(y_columns), observation_dtype(guide))
    check_data(guide, table, columns, args)

    names = None
    if args.group is None:
        x, y = next(minibatches(table, columns, table.num_rows))
        description = f"{table.path.name}: all {len(y)} rows, one dataset."
    else:
        data = read_groups(table, columns, args.group)
        indices = select_groups(data, args.groups, args.max_groups)
        names = [str(data.keys[i]) for i in indices]
        if len(indices) == 1:
            x, y = data.group(int(indices[0]))
        else:
            x, y = data.stack(indices)
        description = describe_selection(
            data, indices, named=bool(args.groups), source=table.path.name
        )
    print(f"diagnosing {description}", file=sys.stderr)
    with explained_observation_errors(guide, table, columns):
        result = report(
            guide,
            x,
            y,
            path=args.out,
            title=args.title or f"iai diagnose {args.checkpoint} {table.path.name}",
            description=description,
            group_names=names,
            column_names=[x_columns or None, y_columns if len(y_columns) > 1 else None],
            passes=args.passes or 1,
            num_samples=args.num_samples,
            sbc_datasets=args.sbc_datasets if guide.family is not None else 0,
            nuts=args.nuts,
            seed=args.seed,
            progress=not args.no_progress,
        )
    for note in result.notes:
        print(f"- {note}")
    print(f"wrote {result.path} ({result.findings['seconds']:.1f} s)", file=sys.stderr)
    return 0
