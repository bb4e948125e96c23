"""A training folder holds one run: a lock while it trains and the run's identity.

``fit(checkpoint_dir=...)`` (both backends) keeps its resumable state in one folder.
Two guards keep that state one run's:

* **A lock.** The training process holds an exclusive ``fcntl.flock`` on
  ``FOLDER/.training.lock`` while it trains. The operating system releases it when the
  process ends, however it ends (SIGKILL included), so a killed run never leaves a stale
  lock; a second process finding the folder locked gets :class:`FolderInUseError`. The
  lock file itself stays: deleting it on exit would let a third process lock a new file
  of the same name while a second still holds the old one. (POSIX only: where ``fcntl``
  does not exist, on Windows, the folder is not locked.)
* **An identity.** The training card records what defines the run (model, guide
  configuration, latent layout, seed, objective, tasks per step, points, learning
  rate, …) as a flat dict. Resuming compares it with the request and refuses another
  run with :class:`RunMismatchError`, naming each difference in words; starting again
  (``resume=False``, ``iai train --overwrite``) replaces the old state only when the
  new run commits its first checkpoint, so a run killed before that leaves the old
  one intact.

A function in an identity (a user's model, the function drawing its covariates) is
:func:`callable_identity`, ``FILE:QUALNAME`` with the file resolved: the same function
is the same run however it was imported (``mymodel:model``, ``./mymodel.py:model``).

Imports neither torch nor JAX.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from iai_prob.checkpoint_format import CheckpointError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = [
    "LOCK_NAME",
    "FolderInUseError",
    "RunMismatchError",
    "callable_identity",
    "check_same_run",
    "find_training_state",
    "flat_identity",
    "lock_folder",
    "make_folder",
    "model_run_identity",
    "saved_identity",
]

LOCK_NAME = ".training.lock"
"""The lock file of a training folder."""

_LABELS = {
    "kind": "kind",
    "backend": "backend",
    "model": "model",
    "layout": "global latents",
    "latent_dim": "latent dimension",
    "feature_dim": "features per point",
    "guide.family": "posterior family",
    "guide.encoder": "encoder",
    "guide.batch_size": "batch size",
    "tasks": "training tasks",
    "seed": "seed",
    "objective": "objective",
    "tasks_per_step": "tasks per step",
    "num_points": "points per task",
    "learning_rate": "learning rate",
    "optimizer": "optimizer",
}
"""Words for the settings a user changes most; others are named by their key."""
_FOLLOW_FROM_MODEL = ("layout", "latent_dim", "feature_dim", "tasks")


class FolderInUseError(ValueError):
    """Another process is training into the same folder."""


class RunMismatchError(CheckpointError):
    """The folder holds another run.

    :param folder: the training folder.
    :param differences: ``[(setting, saved, requested), …]``, or a sentence saying what
        the folder holds instead (``"holds a guide but no training state …"``).

    ``str(error)`` names the folder, what differs and the API's way out
    (``resume=False``); :attr:`description` is the middle part, for the CLI to add its
    own (``--overwrite``).
    """

    def __init__(self, folder, differences: list[tuple[str, object, object]] | str):
        self.folder = Path(folder)
        if isinstance(differences, str):
            self.differences, self.description = [], differences
        else:
            self.differences = list(differences)
            self.description = "holds a run with " + ", ".join(
                f"{label} {_show(saved)}, not {_show(requested)}"
                for label, saved, requested in self.differences
            )
        super().__init__(
            f"{self.folder} {self.description}; resume it with the same settings or pass "
            "resume=False to start again"
        )


def _show(value) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "none"
    if isinstance(value, dict) and set(value) == {"family", "config"}:  # a task family
        options = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(value["config"].items()))
        return f"{value['family']}({options})"
    if isinstance(value, dict) and set(value) == {"callable"}:  # a user's model
        return repr(value["callable"])
    if isinstance(value, dict) and "prior_predictive" in value:  # a user's model's tasks
        return _show_prior_predictive(value)
    return json.dumps(value, sort_keys=True)


def _show_prior_predictive(tasks: dict) -> str:
    """``prior predictive of 'FILE:model' with covariates x ~ N(0, I_3)`` (the observed
    site and data plate only where they are not ``y`` and ``data``)."""
    covariates = tasks.get("covariates")
    if isinstance(covariates, dict) and set(covariates) == {"x_dim"}:
        covariates = f"x ~ N(0, I_{covariates['x_dim']})"
    else:
        covariates = _show(covariates)
    text = f"prior predictive of {_show(tasks['prior_predictive'])} with covariates {covariates}"
    for key, default, words in (
        ("observed", "y", "observed site"),
        ("data_plate", "data", "data plate"),
    ):
        if tasks.get(key, default) != default:
            text += f", {words} {_show(tasks[key])}"
    return text


def callable_identity(function) -> str:
    """``FILE:QUALNAME`` of a function (or of a callable object's class), the source file
    resolved to an absolute path; ``MODULE:QUALNAME`` where it has no source file.

    A poutine handler around a model (``poutine.scale(model, …)``, a messenger's ``fn``)
    stands for the model.
    """
    function = inspect.unwrap(getattr(function, "fn", function))
    owner = function if inspect.isroutine(function) else type(function)
    qualname = getattr(function, "__qualname__", None) or owner.__qualname__
    try:
        file = inspect.getsourcefile(owner)
    except (TypeError, OSError):  # a builtin, a class defined in __main__
        file = None
    if file and os.path.isfile(file):  # not "<string>", "<stdin>"
        return f"{Path(file).resolve()}:{qualname}"
    module = getattr(owner, "__module__", None)
    return f"{module}:{qualname}" if module else qualname


def model_run_identity(card_model: Mapping, model) -> dict:
    """The model as a run identifies it: a task family as the card records it (name and
    configuration), a user's model by :func:`callable_identity` (its file, so that
    another file's function of the same name is another run; the card keeps the bare
    name that ``iai infer --model`` is matched by)."""
    if "family" in card_model:
        return dict(card_model)
    return {"callable": callable_identity(model)}


def flat_identity(identity: Mapping) -> dict:
    """``identity`` as JSON would store it, with the ``guide`` options flattened to
    ``guide.NAME`` (each named on its own in a difference)."""
    identity = json.loads(json.dumps(dict(identity), sort_keys=True))  # tuples -> lists
    guide = identity.pop("guide", None)
    if isinstance(guide, dict):
        identity.update({f"guide.{key}": value for key, value in guide.items()})
    elif guide is not None:
        identity["guide"] = guide
    return identity


def check_same_run(folder, saved: Mapping, requested: Mapping) -> None:
    """Raise :class:`RunMismatchError` unless ``saved`` and ``requested`` (both
    :func:`flat_identity` dicts) agree on every setting that ``saved`` records (an older
    card records fewer)."""
    order = list(_LABELS)
    keys = sorted(
        (key for key in saved if saved[key] != requested.get(key)),
        key=lambda key: (order.index(key) if key in _LABELS else len(order), key),
    )
    if "model" in keys:  # what another model changes with it goes without saying
        keys = [key for key in keys if key not in _FOLLOW_FROM_MODEL]
    if keys:
        differences = [
            (_LABELS.get(key, key.replace("_", " ")), saved[key], requested.get(key))
            for key in keys
        ]
        raise RunMismatchError(folder, differences)


def find_training_state(folder) -> Path | None:
    """``FOLDER/last`` if the folder holds a training state, ``None`` if it holds nothing
    of a run; a guide without its training state is :class:`RunMismatchError` (starting a
    run there would overwrite it)."""
    folder = Path(folder)
    if (folder / "last.json").exists():
        return folder / "last"
    if (folder / "guide.json").exists():
        raise RunMismatchError(folder, "holds a guide but no training state (last.json) to resume")
    return None


_LEGACY_SETTINGS = ("seed", "objective", "tasks_per_step", "num_points", "greedy", "max_passes")


def saved_identity(card: Mapping) -> dict:
    """The identity a training card records under ``run``; a card of an earlier version
    has none, and gives what its ``budget`` records (``seed``, ``objective``, …), its
    ``kind`` and its ``backend`` (``"torch"`` where unnamed)."""
    if isinstance(card.get("run"), dict):
        return dict(card["run"])
    budget = card.get("budget")
    budget = budget if isinstance(budget, dict) else {}
    return flat_identity(
        {
            "kind": card.get("kind"),
            "backend": card.get("backend", "torch"),
            **{key: budget[key] for key in _LEGACY_SETTINGS if key in budget},
        }
    )


def make_folder(path) -> Path:
    """Create the training folder ``path`` (and its parents); a one-line ``ValueError``
    when it is a file or lies under one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"the training folder {path} is a file; name a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), path)
        raise ValueError(
            f"cannot create the training folder {path}: {blocking} is a file"
        ) from None
    except PermissionError as error:
        raise ValueError(f"cannot create the training folder {path}: {error.strerror}") from None
    return path


@contextmanager
def lock_folder(path) -> Iterator[None]:
    """Hold the folder's lock for the ``with`` block (see the module docstring).

    :raises FolderInUseError: another process holds it.
    """
    if fcntl is None:
        yield
        return
    lock = Path(path) / LOCK_NAME
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip()
            raise FolderInUseError(
                f"{path} is in use by another training process"
                f"{f' (pid {owner})' if owner.isdigit() else ''}; wait for it to finish or "
                "train into another folder"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
