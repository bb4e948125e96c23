"""The shipped pretrained guides, loaded into NumPyro.

The checkpoints in :mod:`iai_prob.pretrained` (trained with PyTorch) load unchanged:
``load(name)`` returns ``(guide, params)`` with the card's task family, run under
NumPyro, as ``guide.family``; ``guide.run(params, task, schedule=...)`` (the learned
refinement) matches the PyTorch guide's trajectory for the same mini-batch order, and
both guides' default ``posterior`` converge to the same answer.
"""

from __future__ import annotations

from importlib import resources

from iai_prob.models import get_family
from iai_prob.numpyro.guide import load_guide
from iai_prob.pretrained import available, card

__all__ = ["available", "card", "load"]


def load(name: str):
    """``(guide, params)`` of the shipped guide ``name``, built for its task family (the
    card is verified first; :func:`~iai_prob.numpyro.guide.load_guide` checks the
    family's layout against it before anything is sized)."""
    model = card(name)["model"]
    family = get_family(model["family"], **model["config"]).on("numpyro")
    with resources.as_file(resources.files("iai_prob.pretrained") / f"{name}.safetensors") as path:
        return load_guide(path, family)
