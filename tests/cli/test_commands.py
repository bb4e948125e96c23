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


def test_pretrained_lists_the_shipped_guides_and_their_assumptions(capsys):
    assert main(["pretrained"]) == 0
    out = capsys.readouterr().out
    assert "linear_regression:" in out and "python -m iai_prob.pretrained.train" in out
    heads = [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert heads == ["gaussian_mixture", "linear_regression", "logistic_regression"]
    # in words: dimension, the fixed noise scale, the prior, the training sizes and scale
    linear = out.split("\nlinear_regression:")[1].split("\nlogistic_regression:")[0]
    for line in (
        "data: 8 --x column(s) and 1 --y column(s)",
        "fixed when trained (not inferred from the data):",
        "noise_scale = 0.5: observation noise standard deviation σ",
        "prior_scale = 1.0: prior standard deviation s₀ of each weight",
        "trained on: datasets of 16 to 256 rows",
        "iai infer warns outside x 0.44–2.2, y 0.65–9.5",
    ):
        assert line in linear, line
    mixture = out.split("\nlinear_regression:")[0]
    assert "noise_scale = 0.5: within-component standard deviation σ" in mixture
    assert "data: 0 --x column(s) and 2 --y column(s)" in mixture
    logistic = out.split("\nlogistic_regression:")[1]
    assert "y: whole numbers, whose scale the model fixes (not checked)" in logistic
