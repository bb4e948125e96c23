"""``iai train``: meta-train a guide for a task family or for your own Pyro model.

The model is a registered task family (``linear_regression``, see ``iai_prob.models``)
or ``module:function`` / ``path/to/file.py:function``, a Pyro model called as
``model(x, y)`` whose global latents lie outside ``pyro.plate("data", N)`` and that
accepts a batch of datasets ``x`` of shape ``(T, N, d)`` under an outer
``pyro.plate("tasks", T, dim=-2)`` (README, "Use it from Pyro"). Its training tasks
come from

* its prior predictive, with covariates ``x ~ N(0, I_d)`` (``--x-dim d``) or drawn by
  your own ``--covariates module:function`` (called as ``f(T, N, generator)`` and
  returning the tuple of the model's arguments before ``y``), or
* your real datasets: ``--data FILE --x COLS --y COL --group COL``, one dataset per group
  (reverse KL only: real data have no true latents).

Training shows a progress bar (with the held-out validation score) and checkpoints
every ``--checkpoint-every`` steps into ``--out``; it resumes from there when run again
with the same model and settings (a folder holding another run is refused, naming what
differs; ``--overwrite`` starts again), and the guide kept is the one that scores best
on the held-out validation tasks; the same ``--seed`` gives the same guide, bit for bit.
The guide is ``OUT/guide.json`` and ``OUT/guide.safetensors``, ready for ``iai infer OUT ...``.

``--nproc N`` trains data-parallel on N processes of this machine (torchrun's, with
``--standalone``): every process draws its own share of each step's
``--tasks-per-step`` tasks and its own noise, the gradients are averaged, and the first
process writes ``--out`` (:mod:`iai_prob.inference.data_parallel`). On several machines,
launch the same command under ``torchrun`` yourself (``docs/reliability.md``, "Several
machines"): it joins the process group torchrun describes.
"""

from __future__ import annotations

import json
import shlex

__all__ = ["add_parser", "run"]

EXAMPLES = """examples:
  iai train linear_regression --config '{"dim": 4}' --steps 300 --out runs/lr4
  iai train my_models.py:model --x-dim 3 --steps 300 --out runs/mine
  iai train my_models:model --covariates my_models:covariates --out runs/mine
  iai train my_models:model --data schools.csv --x x0:x7 --y y --group school --out runs/real
  iai train linear_regression --nproc 2 --tasks-per-step 64 --out runs/lr
"""


def add_parser(commands) -> None:
    """Register ``iai train``."""
    from iai_prob.cli.helptext import HelpFormatter

    parser = commands.add_parser(
        "train",
        help="meta-train a guide (task family or module:function)",
        description=__doc__.split("\n\n", 1)[1],
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("model", help="task family name or module:function of a Pyro model")
    parser.add_argument("--out", required=True, help="checkpoint folder (resumes if present)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in an --out that holds another run (default: resume the same run only)",
    )
    parser.add_argument(
        "--config",
        help="task family arguments as JSON, e.g. '{\"dim\": 4}' (default: the family's own)",
    )
    source = parser.add_argument_group("tasks of a module:function model")
    source.add_argument(
        "--x-dim",
        type=int,
        help="draw covariates x ~ N(0, I) of this dimension (default: none; a module:function "
        "model needs one of --x-dim, --covariates, --data)",
    )
    source.add_argument(
        "--covariates",
        help="module:function drawing the covariates, called as f(T, N, generator) "
        "(default: none, see --x-dim)",
    )
    source.add_argument(
        "--data",
        help="CSV or Parquet of real datasets, one per --group (default: none, tasks drawn "
        "from the model's prior predictive)",
    )
    source.add_argument("--x", nargs="+", default=[], help="covariate columns of --data")
    source.add_argument(
        "--y", nargs="+", help="observed column(s) of --data (default: none; needed with --data)"
    )
    source.add_argument(
        "--group",
        help="column naming the dataset of each row of --data (default: none; needed with --data)",
    )
    guide = parser.add_argument_group("guide")
    guide.add_argument(
        "--posterior", default="full_rank", help="posterior family: full_rank, low_rank, diagonal"
    )
    guide.add_argument(
        "--encoder", default="set_transformer", help="dataset encoder: set_transformer, deep_sets"
    )
    guide.add_argument(
        "--encoder-options",
        help="encoder arguments as JSON, e.g. '{\"hidden_dim\": 32}' (default: the encoder's own)",
    )
    guide.add_argument("--batch-size", type=int, default=64, help="rows per refinement step")
    budget = parser.add_argument_group("budget")
    budget.add_argument(
        "--steps", type=int, default=500, help="optimizer steps in all, a resumed run's included"
    )
    budget.add_argument("--tasks-per-step", type=int, default=32, help="datasets per step")
    budget.add_argument(
        "--min-points", type=int, default=16, help="smallest training dataset (rows per task)"
    )
    budget.add_argument(
        "--max-points", type=int, default=256, help="largest training dataset (rows per task)"
    )
    budget.add_argument(
        "--objective", help="reverse_kl, forward_kl, mixed (default: mixed, reverse_kl for --data)"
    )
    budget.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate")
    budget.add_argument(
        "--checkpoint-every", type=int, default=100, help="steps between checkpoints in --out"
    )
    budget.add_argument("--seed", type=int, default=0, help="seeds the training run")
    budget.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    processes = parser.add_argument_group("processes")
    processes.add_argument(
        "--nproc",
        type=int,
        help="train on this many processes of this machine (default: one; under torchrun, "
        "the world size torchrun gives)",
    )
    processes.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda (several processes: one GPU each, LOCAL_RANK, over nccl)",
    )
    parser.set_defaults(run=run)


def _real_datasets(args):
    from iai_prob.cli.infer import parse_columns
    from iai_prob.io import Columns, Table, read_groups

    if not args.y or not args.group:
        raise ValueError("--data needs --y COL and --group COL (one dataset per group)")
    table = Table(args.data)
    columns = Columns(tuple(parse_columns(args.x, table, "--x")), tuple(args.y))
    table.require(columns.y, option="--y")
    data = read_groups(table, columns, args.group)
    return [data.group(index) for index in range(len(data.keys))]


_SOURCES = ("x_dim", "covariates", "data")
"""The options choosing where a module:function model's tasks come from."""
_COLUMNS = ("x", "y", "group")
"""The options naming the columns of ``--data``."""


def _given(args, names) -> list[str]:
    """The options among ``names`` given on the command line, as spelled there."""
    return [
        "--" + name.replace("_", "-") for name in names if getattr(args, name) not in (None, [])
    ]


def _check_sources(args, family: bool) -> None:
    """One line for a task option that does not apply: any for a task family (which
    draws its own tasks), and for a module:function model anything but exactly one
    source, or columns without ``--data``."""
    if family:
        given = _given(args, _SOURCES + _COLUMNS)
        if given:
            raise ValueError(
                f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to a "
                f"module:function model, not to the task family {args.model!r}, which draws "
                "its own tasks; set a family's options with --config"
            )
        return
    if args.config:
        raise ValueError("--config applies to task families, not to module:function models")
    given = _given(args, _SOURCES)
    if len(given) != 1:
        raise ValueError(
            "a module:function model needs exactly one of --x-dim, --covariates, --data; got "
            f"{given or 'none'}"
        )
    columns = _given(args, _COLUMNS)
    if args.data is None and columns:
        raise ValueError(
            f"{', '.join(columns)} appl{'ies' if len(columns) == 1 else 'y'} only with --data, "
            "naming its columns; give --data FILE or drop "
            f"{'it' if len(columns) == 1 else 'them'}"
        )


def _user_tasks(args):
    from iai_prob.cli.loading import import_object
    from iai_prob.inference.sources import NormalCovariates, PriorPredictiveTasks

    model = import_object(args.model, option="model")
    if args.data is not None:
        return model, _real_datasets(args)
    if args.covariates is not None:
        covariates = import_object(args.covariates, option="--covariates")
    else:
        covariates = NormalCovariates(args.x_dim)
    return model, PriorPredictiveTasks(model, covariates)


def _check_budget(args) -> None:
    """One line for the first bad budget or guide option, before any work starts."""
    from iai_prob.checks import check_non_negative_int, check_positive, check_positive_int

    for option in ("steps", "tasks_per_step", "checkpoint_every", "batch_size"):
        check_positive_int("--" + option.replace("_", "-"), getattr(args, option))
    if args.nproc is not None:
        check_positive_int("--nproc", args.nproc)
    check_non_negative_int("--seed", args.seed)
    if args.x_dim is not None:
        check_positive_int("--x-dim", args.x_dim)
    check_positive("--learning-rate", args.learning_rate)
    if not 1 <= args.min_points <= args.max_points:
        raise ValueError(
            "--min-points and --max-points must satisfy 1 <= min <= max, got "
            f"{args.min_points} and {args.max_points}"
        )


def _json_object(option: str, text: str | None):
    """The JSON value given to ``option`` (``{}`` when not given), or one line naming the
    problem; a key given twice is refused (``json`` would keep the last value silently)."""

    def without_duplicates(pairs: list[tuple[str, object]]) -> dict:
        keys = [key for key, _ in pairs]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise ValueError(
                f"{option} names {', '.join(map(repr, twice))} more than once; give each "
                "option once"
            )
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=without_duplicates) if text else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"{option} is not valid JSON ({error}): {text!r}") from None


def _family(name: str, config: str | None):
    from iai_prob.models import FAMILIES

    options = _json_object("--config", config)
    try:
        return FAMILIES[name].from_config(options)
    except ValueError as error:
        raise ValueError(f"--config: {error}") from None


def _validation_summary(history) -> str:
    """``, validation score S (untrained U, kept step K)``: the held-out score of the guide
    saved (lower is better), or nothing when the run had no validation."""
    if history.final is None:
        return ""
    step, score = history.final
    if not history.final_is_best():
        step, score = history.best_step, history.best
    untrained = f"untrained {history.untrained:.4g}, " if history.untrained is not None else ""
    return f", validation score {score:.4g} ({untrained}kept step {step})"


def run(args) -> int:
    """Train, checkpointing ``OUT/last`` and ``OUT/guide`` with the command in its card."""
    from iai_prob.cli.loading import absolute_spec
    from iai_prob.distributed.train import launch, local_device, processes, under_torchrun
    from iai_prob.inference import IterativeAmortizedGuide, fit
    from iai_prob.models import FAMILIES
    from iai_prob.training_folder import RunMismatchError

    _check_budget(args)
    card = {"command": "iai " + shlex.join(args.argv)}
    if ":" in args.model:
        _check_sources(args, family=False)
        model, tasks = _user_tasks(args)
        card["entrypoint"] = absolute_spec(args.model)
    elif args.model in FAMILIES:
        _check_sources(args, family=True)
        model = tasks = _family(args.model, args.config)
    else:
        raise ValueError(
            f"unknown model {args.model!r}: give a task family ({', '.join(sorted(FAMILIES))}) "
            "or module:function"
        )
    objective = args.objective or ("reverse_kl" if args.data else "mixed")
    guide = IterativeAmortizedGuide(
        model,
        family=args.posterior,
        encoder=args.encoder,
        encoder_options=_json_object("--encoder-options", args.encoder_options),
        batch_size=args.batch_size,
    )
    if args.nproc not in (None, 1) and not under_torchrun():
        if args.tasks_per_step % args.nproc:
            raise ValueError(
                f"--tasks-per-step {args.tasks_per_step} must be divisible by --nproc "
                f"{args.nproc} so that every process draws the same number of tasks"
            )
        return launch(args.nproc, args.argv)  # the options are checked: now N processes
    device = local_device(args.device)
    with processes(device, args.nproc) as parallel:
        try:
            result = fit(
                guide,
                tasks,
                steps=args.steps,
                tasks_per_step=args.tasks_per_step,
                num_points=(args.min_points, args.max_points),
                objective=objective,
                learning_rate=args.learning_rate,
                device=device,
                checkpoint_dir=args.out,
                checkpoint_every=args.checkpoint_every,
                resume=not args.overwrite,
                seed=args.seed,
                progress=not args.no_progress,
                parallel=parallel,
                guide_card=card,
            )
        except RunMismatchError as error:
            raise ValueError(
                f"--out {args.out} {error.description}; pass --overwrite to start again"
            ) from None
        if not parallel.is_writer:
            return 0
    # a checkpoint never makes iai import code: a user's model is named again on loading
    model_option = f" --model {args.model}" if ":" in args.model else ""
    processes_used = f" on {parallel.world_size} processes" if parallel.world_size > 1 else ""
    print(
        f"trained {result.steps} steps{processes_used} in {result.seconds:.1f} s (final loss "
        f"{result.losses[-1]:.4g}){_validation_summary(result.validation)}; guide in "
        f"{args.out}/guide.json\n"
        f"next: iai infer {args.out} DATA.csv{model_option} --x COLS --y COL [--group COL] "
        "--out post.nc"
    )
    return 0
