"""What the commands share: importing ``module:function``, finding a checkpoint and the
arguments that name a checkpoint and a data file.

A checkpoint is named by a shipped guide's name (``linear_regression``, see
``iai pretrained``), a training folder (``runs/lr4``, holding ``guide.json``), or a
checkpoint path with or without its suffix (``runs/lr4/guide``,
``runs/lr4/guide.safetensors``). Its card says which model it was trained for: a task
family and its configuration, or a user's model, which is imported only from what the
user names with ``--model module:function`` (never from the card, whose ``entrypoint``
only records what ``iai train`` was given).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path

__all__ = [
    "absolute_spec",
    "add_data_arguments",
    "check_data_arguments",
    "import_object",
    "load_checkpoint",
    "resolve_checkpoint",
]


def add_data_arguments(parser) -> None:
    """The arguments of ``iai infer`` and ``iai diagnose`` that name a checkpoint (and its
    model) and a data file with its columns and groups."""
    parser.add_argument(
        "checkpoint", help="shipped guide name (iai pretrained), iai train folder, or checkpoint"
    )
    parser.add_argument(
        "data", help="CSV (.csv, .csv.gz, .tsv, .tsv.gz) or Parquet (.parquet, .pq) file"
    )
    parser.add_argument(
        "--x", nargs="+", default=[], help="covariate columns (default: none, a model without x)"
    )
    parser.add_argument("--y", nargs="+", required=True, help="observed column(s)")
    parser.add_argument(
        "--group",
        help="column whose values name the datasets, one posterior each "
        "(default: all rows are one dataset)",
    )
    parser.add_argument(
        "--model",
        help="module:function of the model, for a checkpoint of your own model "
        "(default: the checkpoint's task family)",
    )
    parser.add_argument("--num-samples", type=int, default=1000, help="posterior draws per dataset")
    parser.add_argument(
        "--passes",
        type=int,
        default=None,
        help="learned refinement passes over each dataset before the convergence phase, "
        "slower in proportion (default: none for iai infer --group, whose groups of all "
        "sizes then share padded batches; 1 otherwise)",
    )
    parser.add_argument("--chunk-rows", type=int, default=65_536, help="rows read at a time")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def check_data_arguments(args) -> None:
    """One line naming the option for a bad number among :func:`add_data_arguments`'s
    and ``--seed``, checked before the data or the checkpoint is read."""
    from iai_prob.checks import check_non_negative_int, check_positive_int

    if args.num_samples < 2:
        raise ValueError(
            f"--num-samples must be an integer ≥ 2 (posterior draws per dataset), "
            f"got {args.num_samples!r}"
        )
    if args.passes is not None:
        check_positive_int("--passes", args.passes)
    check_positive_int("--chunk-rows", args.chunk_rows)
    check_non_negative_int("--seed", args.seed)


def _import_failure(option: str, module_name: str, error: BaseException) -> ValueError:
    """One line for a module that failed while being imported: the file, the line and the
    error (a syntax error, ``sys.exit`` or any exception raised by its top-level code)."""
    if isinstance(error, SyntaxError):
        return ValueError(
            f"{option}: {error.filename} has a syntax error at line {error.lineno}: "
            f"{error.msg}; fix it and run again"
        )
    # the first frame outside this file and importlib is the module's top-level code
    machinery = (__file__, str(Path(importlib.__file__).parent))
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith(("<frozen", *machinery))
    ]
    where = f"{frames[0].filename}, line {frames[0].lineno}" if frames else module_name
    if isinstance(error, SystemExit):
        return ValueError(
            f"{option}: importing {module_name!r} called sys.exit({error.code!r}) ({where}); a "
            "model file must not exit when imported: put script code under "
            "if __name__ == '__main__':"
        )
    message = " ".join(str(error).split())
    return ValueError(
        f"{option}: importing {module_name!r} raised {type(error).__name__}"
        f"{': ' + message if message else ''} ({where}); fix the module's top-level code"
    )


def absolute_spec(spec: str) -> str:
    """``module:function`` as given, ``path/to/file.py:function`` with the path made
    absolute: it names the same file from another working directory (a checkpoint's card,
    a Dask worker)."""
    module, _, name = spec.partition(":")
    if module.endswith(".py") or "/" in module:
        module = str(Path(module).resolve())
    return f"{module}:{name}"


def import_object(spec: str, *, option: str = "model"):
    """Import ``module:name`` (a module on ``sys.path`` or the working directory) or
    ``path/to/file.py:name``; ``name`` may be dotted (``module:Class.method``).

    :raises ValueError: one line naming the file, line and error when the module fails to
        import (a syntax error, ``sys.exit`` or an exception at import).
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{option}: expected module:function, got {spec!r}")
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise FileNotFoundError(f"{option}: file {module_name!r} does not exist")
        name = f"_iai_user_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except (Exception, SystemExit) as error:
            del sys.modules[name]
            raise _import_failure(option, module_name, error) from error
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            missing = error.name or ""
            if module_name != missing and not module_name.startswith(missing + "."):
                raise _import_failure(option, module_name, error) from error  # inside it
            raise ValueError(f"{option}: cannot import {module_name!r} ({error})") from None
        except (Exception, SystemExit) as error:
            raise _import_failure(option, module_name, error) from error
    value = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ValueError(f"{option}: {module_name!r} has no attribute {attribute!r}")
        value = getattr(value, part)
    if not callable(value):
        raise ValueError(f"{option}: {spec!r} is not callable")
    return value


def resolve_checkpoint(checkpoint: str) -> tuple[Path | None, str | None]:
    """``(path, None)`` for a checkpoint on disk, ``(None, name)`` for a shipped guide."""
    from iai_prob import pretrained

    path = Path(checkpoint)
    if path.is_dir():
        path = path / "guide"
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    if stem.with_suffix(".json").is_file():
        return stem, None
    if checkpoint in pretrained.available():
        return None, checkpoint
    raise FileNotFoundError(
        f"checkpoint {checkpoint!r} is neither a file (no {stem.with_suffix('.json')}) nor a "
        f"shipped guide ({', '.join(pretrained.available())})"
    )


def load_checkpoint(checkpoint: str, *, model: str | None = None):
    """The guide of ``checkpoint`` (see the module docstring), built for its model.

    The card is verified (hashes, schema, sizes against the weights) before anything acts
    on it, and no name in it is ever imported: a checkpoint of a task family is built for
    that family, a checkpoint of your own model needs ``--model module:function``.

    :param model: ``module:function`` of the model, for a checkpoint of a user's model.
    """
    from iai_prob import pretrained
    from iai_prob.checkpoint_format import read_card
    from iai_prob.guide_card import check_guide_card
    from iai_prob.inference.guide import load_family_guide, load_guide

    path, name = resolve_checkpoint(checkpoint)
    if name is not None and model is None:
        return pretrained.load(name)
    if path is None:
        raise ValueError(f"--model applies to checkpoint files, not to the shipped {name!r}")
    if model is not None:
        return load_guide(path, import_object(model, option="--model"))
    _, card = read_card(path)
    check_guide_card(card, str(path))
    if "family" in card["model"]:
        return load_family_guide(path)
    trained_with = card.get("entrypoint")
    raise ValueError(
        f"checkpoint {path} was trained for your model {card['model']['callable']!r}"
        + (f" (iai train was given {trained_with!r})" if trained_with else "")
        + "; pass --model module:function: a model is only imported from the command line, "
        "never from a checkpoint"
    )
