"""``iai`` help texts, ``iai bench`` pass-through, ``iai pretrained``."""

import pytest

from iai_prob.cli import main


@pytest.mark.parametrize("command", ["train", "infer", "bench"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"iai {command}" in out


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "train", "infer", "bench", "pretrained"):
        assert command in out


def test_bench_runs_run_all_with_quick(tmp_path, capsys):
    script = tmp_path / "benchmarks" / "run_all.py"
    script.parent.mkdir()
    script.write_text(
        "import sys, pathlib\npathlib.Path(sys.argv[sys.argv.index('--out') + 1]).write_text("
        "' '.join(sys.argv[1:]))\n"
    )
    out = tmp_path / "tables.md"
    assert main(["bench", "--quick", "--root", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text() == f"--quick --out {out}"


def test_bench_without_a_checkout(tmp_path, capsys):
    assert main(["bench", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iai bench: error: no benchmarks/run_all.py under") and "\n" not in err


def test_pretrained_lists_the_shipped_guides(capsys):
    assert main(["pretrained"]) == 0
    out = capsys.readouterr().out
    assert "linear_regression:" in out and "python -m iai_prob.pretrained.train" in out
