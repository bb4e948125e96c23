"""Install lines in the docs work from a checkout: ``pip install -e ".[extra]"``.

``iai_prob`` is not on PyPI, so ``pip install "iai_prob[extra]"`` fails; every
``pip install`` of the README, ``docs/`` and ``examples/`` installs the checkout (``.``
or ``-e .``), and names only extras that ``pyproject.toml`` defines.
"""

import re
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").rglob("*.py")]
# a pip install command up to the end of its line or of its inline code span
PIP_INSTALL = re.compile(r"pip\s+install\s[^`\n]*(?:\n[^`\n]*)?(?=`|$)", re.MULTILINE)
REQUIREMENT = re.compile(r"""["']?(?P<name>[\w.-]+|\.)(?:\[(?P<extras>[\w,\s-]+)\])?["']?""")


def _install_lines():
    for path in SOURCES:
        for match in PIP_INSTALL.finditer(path.read_text()):
            yield path.relative_to(ROOT).as_posix(), " ".join(match[0].split())


def _extras():
    """The extras of the installed (editable) checkout, as pyproject.toml defines them."""
    return set(metadata.metadata("iai_prob").get_all("Provides-Extra") or ())


@pytest.mark.parametrize(("source", "line"), list(_install_lines()))
def test_install_line_works_from_a_checkout(source, line):
    words = [word for word in line.split()[2:] if not word.startswith("-")]
    for word in words:
        requirement = REQUIREMENT.fullmatch(word)
        if requirement is None or requirement["name"] in {"torch", "pip"}:
            continue
        assert requirement["name"] != "iai_prob", (
            f"{source}: `{line}` installs iai_prob from PyPI, where it is not: "
            f'write `pip install -e ".[extra]"` (from the root of a checkout)'
        )
        if requirement["name"] == "." and requirement["extras"]:
            unknown = {extra.strip() for extra in requirement["extras"].split(",")} - _extras()
            assert not unknown, f"{source}: `{line}` names extras pyproject lacks: {unknown}"


def test_the_docs_have_checkout_install_lines():
    lines = [line for _, line in _install_lines()]
    assert any('-e ".[jax]"' in line for line in lines)
    assert any('-e ".[distributed]"' in line for line in lines)
