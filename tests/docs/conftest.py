"""The docs build's own code (``docs/hooks/``) is imported from its file, as MkDocs and
griffe load it."""

import importlib.util
import sys
from pathlib import Path

import pytest

HOOKS = Path(__file__).resolve().parents[2] / "docs" / "hooks"


def load_hook(name: str):
    """The module ``docs/hooks/<name>.py``."""
    qualified = f"docs_hooks_{name}"
    if qualified not in sys.modules:
        spec = importlib.util.spec_from_file_location(qualified, HOOKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[qualified] = module
    return sys.modules[qualified]


@pytest.fixture(scope="module")
def sphinx_roles():
    """``docs/hooks/sphinx_roles.py`` (needs griffe, part of the docs extra)."""
    pytest.importorskip("griffe")
    return load_hook("sphinx_roles")


@pytest.fixture(scope="module")
def mathml():
    """``docs/hooks/mathml.py`` (needs latex2mathml, part of the docs extra)."""
    pytest.importorskip("latex2mathml")
    return load_hook("mathml")
