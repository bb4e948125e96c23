"""Every public name has a docstring and an entry in the API reference.

Public names are those in the ``__all__`` of every module of ``iai_prob`` whose dotted
path has no component starting with ``_``. Docstrings are read with griffe, the same
static loader mkdocstrings renders from, so attribute docstrings (a string right after
a module constant) count and inherited or generated ones (``NamedTuple``) do not. A name
has a reference entry when ``docs/`` holds ``::: module`` for the module that defines it
(mkdocstrings renders the module's ``__all__``) or ``::: module.name``.
"""

import importlib
import pkgutil
import re
from pathlib import Path

import griffe
import pytest

import iai_prob

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _public_modules():
    names = ["iai_prob"]
    for info in pkgutil.walk_packages(iai_prob.__path__, prefix="iai_prob."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def _public_names():
    pairs = []
    for name in _public_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as error:  # an optional extra (jax) that is not installed
            pytest.skip(f"{name}: {error}")
        pairs += [(name, member) for member in getattr(module, "__all__", ())]
    return pairs


@pytest.fixture(scope="module")
def package():
    return griffe.load("iai_prob", search_paths=[str(DOCS.parent)], resolve_aliases=True)


@pytest.fixture(scope="module")
def entries():
    found = set()
    for page in DOCS.rglob("*.md"):
        found |= set(re.findall(r"^:::\s*([\w.]+)", page.read_text(), flags=re.MULTILINE))
    return found


def _target(package, module: str, name: str):
    obj = package[module.removeprefix("iai_prob.")] if module != "iai_prob" else package
    member = obj.members[name]
    return member.final_target if member.is_alias else member


@pytest.mark.parametrize(("module", "name"), _public_names())
def test_public_name_has_docstring_and_reference(package, entries, module, name):
    target = _target(package, module, name)
    if name == "__version__":
        return
    docstring = target.docstring.value.strip() if target.docstring else ""
    assert docstring, f"{module}.{name} ({target.path}) has no docstring"
    defining = target.path.rsplit(".", 1)[0]
    covered = {f"{module}.{name}", target.path, defining}
    assert covered & entries, (
        f"{module}.{name} has no API reference entry: add '::: {defining}' under docs/api/"
    )
