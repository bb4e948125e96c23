"""``iai infer``: posteriors for a CSV or Parquet file, one per group or one for all rows.

CHECKPOINT is a shipped guide's name (``linear_regression``; see ``iai pretrained``), a
folder written by ``iai train``, or a checkpoint path. The covariate columns (``--x``,
none for a model without covariates) and the observed column(s) (``--y``) become the
model's ``x`` of shape ``(N, d)`` and ``y`` of shape ``(N,)`` (or ``(N, k)``); columns
are listed with spaces or commas, and ``a:b`` is every column from ``a`` to ``b`` in
file order.

With ``--group COL`` each distinct value of COL is its own dataset (many small datasets
in one file: per user, per school, per sensor) and gets its own posterior; groups of
any sizes go through the guide together as padded batches of tasks (each group's
answer is the one it gets alone). ``--passes P`` refines over each dataset P times
with the guide's learned mini-batch steps before the convergence phase (then groups
of equal size share a batch): slower in proportion. Without ``--group``, all rows are
one dataset, streamed in mini-batches in constant memory, so the file may be larger
than memory. The posteriors are written as an ArviZ InferenceData netCDF file (with a
``group`` dimension when grouped) and summarized on screen.

Before the checkpoint is loaded, ``--out`` and every numeric option are checked, and a
column named twice is refused. A warning (one line, the run goes on) says when the
data's scale is far outside the guide's training data and when the model does not
reproduce the spread of ``y`` (a posterior predictive check per dataset): then the
posteriors may be far off, and ``iai diagnose`` tells more.
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager

from iai_prob.checks import check_non_negative_int, check_positive_int
from iai_prob.cli.helptext import HelpFormatter
from iai_prob.cli.loading import add_data_arguments, check_data_arguments
from iai_prob.cli.output import check_output_file

__all__ = [
    "add_parser",
    "check_data",
    "check_fits",
    "check_options",
    "data_columns",
    "explained_observation_errors",
    "parse_columns",
    "run",
    "warn_if_misfit",
    "warn_if_unlike_training",
]

EXAMPLES = """examples:
  iai infer linear_regression schools.csv --x x0:x7 --y y --group school --out schools.nc
  iai infer runs/mine big.parquet --x a b c --y target --out big.nc
  iai infer runs/mixture points.csv --y y0,y1 --out mixture.nc     # no covariates
"""


def add_parser(commands) -> None:
    """Register ``iai infer``."""
    parser = commands.add_parser(
        "infer",
        help="posteriors for a CSV/Parquet file (one per --group)",
        description=__doc__.split("\n\n", 1)[1],
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="netCDF file (.nc) for the InferenceData")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="rows per refinement step when streaming one dataset (default: the guide's)",
    )
    parser.add_argument(
        "--max-tasks", type=int, default=256, help="groups of one size per guide call"
    )
    parser.add_argument(
        "--show", type=int, default=5, help="groups shown in the summary (0: no summary)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the posterior draws")
    parser.add_argument(
        "--dask",
        metavar="local:N|ADDRESS",
        help="with --group: compute the posteriors and draws on a Dask cluster, local:N "
        "single-threaded worker processes or a scheduler's address (tcp://host:8786); the "
        "same file and summary as one process (default: one process)",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        help="cap on each dataset's full-data convergence steps (default: the guide's "
        "convergence setting; 0: check only); a dataset not converged is named in a warning",
    )
    parser.set_defaults(run=run)


def parse_columns(values, table, option: str) -> list[str]:
    """Column names from ``values`` (spaces, commas, ``a:b`` ranges), checked in ``table``."""
    known = table.columns
    columns = []
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            if item not in known and ":" in item:
                first, last = item.split(":", 1)
                start, stop = table.require([first, last], option=option)
                i, j = known.index(start), known.index(stop)
                if j < i:
                    raise ValueError(f"{option}: range {item!r} runs backwards in the file")
                columns += known[i : j + 1]
            else:
                columns += table.require([item], option=option)
    return columns


def data_columns(args, table) -> tuple[list[str], list[str]]:
    """The ``--x`` and ``--y`` columns of ``table`` (and ``--group``'s), each column at
    most once among them: a repeated one is a one-line ``ValueError``."""
    x_columns = parse_columns(args.x, table, "--x")
    y_columns = parse_columns(args.y, table, "--y")
    if args.group is not None:
        table.require([args.group], option="--group")
    seen = {}
    named = [("--x", c) for c in x_columns] + [("--y", c) for c in y_columns]
    for option, column in named + ([("--group", args.group)] if args.group else []):
        if column in seen:
            where = "twice in " + option if seen[column] == option else f"in {seen[column]}"
            raise ValueError(
                f"{option}: column {column!r} is already named {where}; each column can be "
                "used once"
            )
        seen[column] = option
    return x_columns, y_columns


def _reason(error: BaseException) -> str:
    """The first line of ``error``, with the first line of its cause when it ends in ``:``
    (Pyro's ``Error while computing log_prob at site 'y':`` puts the reason below)."""
    lines = str(error).strip().splitlines()
    reason = lines[0] if lines else type(error).__name__
    cause = error.__cause__ or error.__context__
    if reason.endswith(":") and (len(lines) > 1 or cause is not None):
        below = lines[1] if len(lines) > 1 else str(cause).strip().splitlines()[0]
        reason = f"{reason} {below.strip()}"
    return reason


def check_fits(guide, x, y, checkpoint: str, *, y_names=("y",), source="the data") -> None:
    """Raise a one-line ``ValueError`` unless ``(x, y)`` fit the checkpoint's model: the
    number of columns, every observation in the support of its likelihood
    (:func:`~iai_prob.cli.assumptions.support_error`, naming the column, value and row),
    and the model's shapes (``guide.prepare`` on two rows)."""
    from iai_prob.cli.assumptions import support_error

    family = guide.family
    if family is not None:
        import torch

        _, x_like, y_like = family.sample(1, 1, generator=torch.Generator().manual_seed(0))
        need_x, need_y = x_like.shape[-1], math.prod(y_like.shape[2:])
        got_y = math.prod(y.shape[1:])
        if x.shape[-1] != need_x or got_y != need_y:
            raise ValueError(
                f"checkpoint {checkpoint!r} is for {family!r}: it needs {need_x} --x column(s) "
                f"and {need_y} --y column(s), got {x.shape[-1]} and {got_y}"
            )
    message = support_error(guide.model, x, y, y_names=y_names, source=source)
    if message is not None:
        raise ValueError(message)
    try:
        guide.prepare(x[:2], y[:2])
    except (ValueError, RuntimeError, IndexError) as error:
        raise ValueError(
            f"checkpoint {checkpoint!r} does not fit these columns ({x.shape[-1]} --x, "
            f"{math.prod(y.shape[1:]) if y.dim() > 1 else 1} --y): {_reason(error)}"
        ) from None


def warn_if_unlike_training(guide, chunk, columns, table, args) -> None:
    """One line on stderr when the first rows' scale is far outside the training data's
    (:func:`~iai_prob.cli.assumptions.scale_warning`); the command goes on."""
    from iai_prob.cli.assumptions import scale_warning

    x, y = columns.tensors(chunk, source=table.path.name)
    warning = scale_warning(guide, x, y, x_names=columns.x, checkpoint=args.checkpoint)
    if warning is not None:
        print(f"iai {args.command}: warning: {warning}", file=sys.stderr)


def check_data(guide, table, columns, args):
    """The checks of the first chunk of rows, before any inference: the columns fit the
    checkpoint's model (:func:`check_fits`), and a warning when the data's scale is
    unlike the training data's (:func:`warn_if_unlike_training`). Returns the chunk."""
    first = next(table.chunks(columns.names))
    x, y = columns.tensors(first, source=table.path.name)
    check_fits(guide, x, y, args.checkpoint, y_names=columns.y, source=table.path.name)
    warn_if_unlike_training(guide, first, columns, table, args)
    return first


@contextmanager
def explained_observation_errors(guide, table, columns):
    """A ``ValueError`` of the inference (the model refusing an observation past the
    rows :func:`check_data` saw) becomes the line naming the first column, value and row
    outside the likelihood's support, found by reading the file again; other errors
    pass unchanged."""
    from iai_prob.cli.assumptions import support_error

    try:
        yield
    except ValueError:
        seen = 0
        for frame in table.chunks(columns.names):
            x, y = columns.tensors(frame, source=table.path.name)
            message = support_error(
                guide.model, x, y, y_names=columns.y, source=table.path.name, first_row=seen + 1
            )
            if message is not None:
                raise ValueError(message) from None
            seen += len(frame)
        raise


def check_options(args) -> None:
    """``iai infer``'s numeric options, each refused in one line naming it."""
    check_data_arguments(args)
    check_positive_int("--max-tasks", args.max_tasks)
    if args.batch_size is not None:
        check_positive_int("--batch-size", args.batch_size)
    check_non_negative_int("--show", args.show)
    if args.max_steps is not None:
        check_non_negative_int("--max-steps", args.max_steps)
    if args.dask is not None and args.group is None:
        raise ValueError("--dask runs the grouped path: give --group COL (one dataset per group)")
    if args.dask is not None and args.dask.startswith("local:"):
        count = args.dask.partition(":")[2]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(
                f"--dask local:N needs a positive number of workers, got {args.dask!r}"
            )


def warn_if_misfit(guide, result, first, columns, table, args) -> None:
    """One line on stderr when the model does not reproduce the spread of ``y``
    (:func:`~iai_prob.cli.assumptions.spread_warning`); the command goes on."""
    from iai_prob.cli.assumptions import (
        PPC_MAX_ROWS,
        grouped_sd_pvalues,
        sd_pvalues,
        spread_warning,
    )
    from iai_prob.io import GroupedPosterior

    if isinstance(result, GroupedPosterior):
        pvalues = grouped_sd_pvalues(guide, result, seed=args.seed)
        labels = [str(key) for key in result.keys]
    else:
        x, y = columns.tensors(first.head(PPC_MAX_ROWS), source=table.path.name)
        pvalues, labels = sd_pvalues(guide, result.posterior, x, y, seed=args.seed), None
    warning = spread_warning(pvalues, labels, family=guide.family)
    if warning is not None:
        print(f"iai {args.command}: warning: {warning}", file=sys.stderr)


def _on_dask(guide, table, columns, args):
    """``(result, idata, what was timed)`` of the grouped path on ``--dask``'s cluster
    (:mod:`iai_prob.distributed.grouped_inference`): the rows read and split here, the
    batches computed by the workers."""
    import time
    from pathlib import Path

    from iai_prob.cli.loading import absolute_spec, resolve_checkpoint
    from iai_prob.distributed.grouped_inference import infer_groups_on_dask, start_client
    from iai_prob.io import read_groups

    started = time.perf_counter()
    data = read_groups(table, columns, args.group)
    read_seconds = time.perf_counter() - started
    path, name = resolve_checkpoint(args.checkpoint)
    options = {
        "checkpoint": name if path is None else str(Path(path).resolve()),
        "model": None if args.model is None else absolute_spec(args.model),
        "max_steps": args.max_steps,
    }
    with start_client(args.dask) as client:
        gathered = infer_groups_on_dask(
            guide,
            data,
            client,
            guide_options=options,
            max_tasks=args.max_tasks,
            passes=args.passes,
            num_samples=args.num_samples,
            seed=args.seed,
            progress=not args.no_progress,
        )
    result = gathered.result._replace(read_seconds=read_seconds)
    where = f"posteriors and draws on {gathered.workers} Dask worker(s) in"
    return result, gathered.idata, where


def _grouped(guide, table, columns, args):
    """``(result, idata)`` of ``--group``: in this process (``idata`` is ``None``, exported
    afterwards) or on ``--dask``'s cluster; prints the line of groups and timings."""
    from iai_prob.io import grouped_posteriors

    with explained_observation_errors(guide, table, columns):
        if args.dask is not None:
            result, idata, where = _on_dask(guide, table, columns, args)
        else:
            result = grouped_posteriors(
                guide,
                table,
                columns,
                group=args.group,
                max_tasks=args.max_tasks,
                passes=args.passes,
                progress=not args.no_progress,
            )
            idata, where = None, "posteriors in"
    print(
        f"{len(result.keys)} groups of {result.sizes.min()} to {result.sizes.max()} rows "
        f"from {table.path.name}: read in {result.read_seconds:.2f} s, {where} "
        f"{result.seconds:.2f} s ({result.groups_per_second:.0f} groups/s"
        f"{', batched as tasks' if result.batched else ', one call per group'})",
        file=sys.stderr,
    )
    return result, idata


def run(args) -> int:
    """Infer, write ``--out``, print the summary."""
    from dataclasses import replace
    from pathlib import Path

    from iai_prob.cli.loading import load_checkpoint
    from iai_prob.inference import Convergence
    from iai_prob.io import Columns, Table, observation_dtype, stream_posterior
    from iai_prob.io.export import inference_data, status_table, summary_table

    check_output_file(args.out, (".nc",), "a netCDF file")
    check_options(args)
    table = Table(args.data, chunk_rows=args.chunk_rows)
    x_columns, y_columns = data_columns(args, table)
    guide = load_checkpoint(args.checkpoint, model=args.model)
    if args.max_steps is not None:
        guide.convergence = replace(guide.convergence or Convergence(), max_steps=args.max_steps)
    columns = Columns(tuple(x_columns), tuple(y_columns), observation_dtype(guide))
    first = check_data(guide, table, columns, args)

    progress = not args.no_progress
    idata = None  # the grouped path on Dask brings its InferenceData; the others export below
    if args.group is not None:
        result, idata = _grouped(guide, table, columns, args)
    else:
        with explained_observation_errors(guide, table, columns):
            result = stream_posterior(
                guide,
                table,
                columns,
                batch_size=args.batch_size,
                passes=args.passes or 1,
                progress=progress,
            )
        print(
            f"{result.num_rows} rows of {table.path.name} streamed in {result.seconds:.2f} s",
            file=sys.stderr,
        )
    warn_if_misfit(guide, result, first, columns, table, args)
    if idata is None:
        idata = inference_data(
            guide,
            result,
            table=table,
            columns=columns,
            num_samples=args.num_samples,
            seed=args.seed,
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    idata.to_netcdf(args.out)
    statuses, count = status_table(result, show=args.show)
    if count is not None:
        print(count, file=sys.stderr)
    if args.show:
        print(summary_table(idata, show=args.show).to_string())
        if statuses is not None:
            print(statuses.to_string())
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
