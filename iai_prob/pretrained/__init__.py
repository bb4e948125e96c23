"""Pretrained guides shipped with the package (safetensors + JSON card each).

``load(name)`` returns an :class:`~iai_prob.inference.IterativeAmortizedGuide` with its
task family as ``guide.family`` (:func:`iai_prob.numpyro.pretrained.load` loads the same
files into NumPyro; this module imports torch only inside :func:`load`). Each card names
the command that trained it (``python -m iai_prob.pretrained.train NAME``), its training
budget and its measured quality.
"""

from __future__ import annotations

from importlib import resources

from iai_prob.checkpoint_format import CheckpointError, read_card

__all__ = ["available", "card", "load"]


def _folder():
    return resources.files(__package__)


def available() -> list[str]:
    """Names of the shipped checkpoints."""
    return sorted(
        entry.name[: -len(".json")] for entry in _folder().iterdir() if entry.name.endswith(".json")
    )


def _checked_name(name: str) -> str:
    if name not in available():
        raise CheckpointError(f"no pretrained guide named {name!r}; available: {available()}")
    return name


def card(name: str) -> dict:
    """The JSON card of the shipped checkpoint ``name``, its hashes checked."""
    with resources.as_file(_folder()) as folder:
        return read_card(folder / _checked_name(name))[1]


def load(name: str, *, device=None):
    """The shipped guide ``name``, built for its task family (``guide.family``)."""
    from iai_prob.inference.guide import load_family_guide  # torch is imported here only

    with resources.as_file(_folder()) as folder:
        return load_family_guide(folder / _checked_name(name), device=device)
