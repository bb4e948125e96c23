"""The site that ``make docs`` builds: strict, offline, and rendered.

One ``mkdocs build --strict`` (what ``make docs`` runs) is shared by the tests: it
succeeds with no warnings, the pages load no script or stylesheet from another host (the
math is MathML made at build time, the fonts are the system's), no page shows a raw
Sphinx role (``:class:`` before the code) or TeX that was not typeset.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

EXTERNAL = re.compile(
    r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE
)
RAW_ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj|const):")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    pytest.importorskip("mkdocstrings_handlers.python", reason="the docs extra is not installed")
    site = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return result, site


@pytest.fixture(scope="module")
def pages(build):
    _, site = build
    return {path.relative_to(site).as_posix(): path.read_text() for path in site.rglob("*.html")}


def test_docs_build_strict(build):
    result, site = build
    assert result.returncode == 0, result.stderr[-3000:]
    assert (site / "api" / "io" / "index.html").is_file()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert not warnings, warnings


def test_no_script_or_style_from_another_host(pages):
    assert "index.html" in pages
    found = {name: EXTERNAL.findall(text) for name, text in pages.items()}
    assert not {name: tags for name, tags in found.items() if tags}


def test_math_is_typeset_at_build_time(pages):
    concepts = pages["concepts/index.html"]
    assert concepts.count("<math") > 20
    untypeset = {name: text.count('class="arithmatex">\\') for name, text in pages.items()}
    assert not {name: count for name, count in untypeset.items() if count}


def test_api_pages_show_no_raw_sphinx_roles(pages):
    api = {name: text for name, text in pages.items() if name.startswith("api/")}
    assert len(api) >= 9
    raw = {name: RAW_ROLE.findall(text) for name, text in api.items()}
    assert not {name: roles for name, roles in raw.items() if roles}
    # the roles became links: the io page links its Table class from other docstrings
    assert 'href="#iai_prob.io.tables.Table"' in api["api/io/index.html"]
