"""Pretrained guides shipped with the package (safetensors + JSON card each).

``load(name)`` returns an :class:`~iai_prob.inference.IterativeAmortizedGuide` with its
task family as ``guide.family`` (:func:`iai_prob.numpyro.pretrained.load` loads the same
files into NumPyro; this module imports torch only inside :func:`load`). Each card names
the command that trained it (``python -m iai_prob.pretrained.train NAME``), its training
budget and its measured quality.
"""

from __future__ import annotations

import json
from importlib import resources

from iai_prob.checkpoint_format import CheckpointError

__all__ = ["available", "card", "load"]


def _folder():
    return resources.files(__package__)


def available() -> list[str]:
    """Names of the shipped checkpoints."""
    return sorted(
        entry.name[: -len(".json")] for entry in _folder().iterdir() if entry.name.endswith(".json")
    )


def card(name: str) -> dict:
    """The JSON card of the shipped checkpoint ``name``."""
    path = _folder() / f"{name}.json"
    if not path.is_file():
        raise CheckpointError(f"no pretrained guide named {name!r}; available: {available()}")
    return json.loads(path.read_text())


def load(name: str, *, device=None):
    """The shipped guide ``name``, built for its task family (``guide.family``)."""
    from iai_prob.inference.checkpoint import load_guide  # torch is imported here only
    from iai_prob.models import get_family

    model = card(name)["model"]
    family = get_family(model["family"], **model["config"])
    with resources.as_file(_folder() / f"{name}.safetensors") as path:
        return load_guide(path, family, device=device)
