"""Every page under ``docs/`` is in the navigation of ``mkdocs.yml``, and every entry of
the navigation is a page that exists (a page left out is reachable only by its URL)."""

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]


class _Loader(yaml.SafeLoader):
    """``mkdocs.yml`` may hold tags (``!!python/name:``, ``!ENV``) that only MkDocs builds."""


_Loader.add_multi_constructor("", lambda loader, suffix, node: None)


def _entries(nav):
    for entry in nav:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            if isinstance(value, list):
                yield from _entries(value)
            elif isinstance(value, str) and "://" not in value:
                yield value


@pytest.fixture(scope="module")
def config():
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)


def test_every_page_is_in_the_nav(config):
    docs = ROOT / config.get("docs_dir", "docs")
    pages = {path.relative_to(docs).as_posix() for path in docs.rglob("*.md")}
    assert "index.md" in pages
    assert pages - set(_entries(config["nav"])) == set()


def test_every_nav_entry_is_a_page(config):
    docs = ROOT / config.get("docs_dir", "docs")
    entries = list(_entries(config["nav"]))
    assert len(entries) == len(set(entries)), "a page is in the nav twice"
    assert [entry for entry in entries if not (docs / entry).is_file()] == []
