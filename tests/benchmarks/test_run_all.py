"""``benchmarks/run_all.py``: a quick run prints its tables and never replaces
``docs/benchmarks.md``; a full run writes it."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_all(tmp_path, monkeypatch):
    """``run_all`` with two fake benchmark scripts and its docs file under ``tmp_path``."""
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("first", "second"):
        (tmp_path / f"{name}.py").write_text(
            "import sys, pathlib\n"
            "out = pathlib.Path(sys.argv[sys.argv.index('--out') + 1])\n"
            f"out.write_text('| {name} |' + (' quick' if '--quick' in sys.argv else ''))\n"
        )
    monkeypatch.setattr(module, "SCRIPTS", ("first", "second"))
    monkeypatch.setattr(module, "HERE", tmp_path)
    monkeypatch.setattr(module, "DOCS", tmp_path / "docs" / "benchmarks.md")
    return module


def test_the_real_docs_are_the_default_of_a_full_run_only():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.destination(False, None) == ROOT / "docs" / "benchmarks.md"
    assert module.destination(True, None) is None
    assert module.destination(True, "t.md") == Path("t.md")


def test_quick_prints_and_writes_nothing(run_all, capsys):
    assert run_all.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| first | quick" in out and "| second | quick" in out
    assert "python benchmarks/run_all.py --quick" in out
    assert not run_all.DOCS.exists()


def test_quick_writes_where_asked_and_full_writes_the_docs(run_all, tmp_path, capsys):
    assert run_all.main(["--quick", "--out", str(tmp_path / "q.md")]) == 0
    assert "| second | quick" in (tmp_path / "q.md").read_text()
    assert not run_all.DOCS.exists()
    assert run_all.main([]) == 0
    text = run_all.DOCS.read_text()
    assert "| first |" in text and "quick" not in text
