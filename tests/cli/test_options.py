"""``iai infer`` and ``iai diagnose``: every numeric option and every column choice is
checked before the checkpoint is loaded, one line naming the option."""

import pytest

from iai_prob.cli import main


@pytest.fixture
def no_checkpoint(monkeypatch):
    """Loading the checkpoint fails the test: the options must be refused before."""
    import iai_prob.cli.loading

    def no_inference(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded: the option is checked too late")

    monkeypatch.setattr(iai_prob.cli.loading, "load_checkpoint", no_inference)


def _argv(command, data, tmp_path):
    out = tmp_path / ("o.nc" if command == "infer" else "r.html")
    return [command, "linear_regression", str(data), "--x", "x0:x7", "--y", "y",
            "--out", str(out), "--no-progress"]  # fmt: skip


def _one_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


DRAWS = "--num-samples must be an integer ≥ 2 (posterior draws per dataset), got "
SBC = "--sbc-datasets must be 0 (no simulation-based calibration) or an integer ≥ 2, got "
SHARED = [
    ("--num-samples", "0", DRAWS + "0"),
    ("--num-samples", "1", DRAWS + "1"),
    ("--num-samples", "-1", DRAWS + "-1"),
    ("--passes", "0", "--passes must be a positive integer, got 0"),
    ("--chunk-rows", "0", "--chunk-rows must be a positive integer, got 0"),
    ("--seed", "-1", "--seed must be a non-negative integer, got -1"),
]
INFER = [
    ("--max-tasks", "0", "--max-tasks must be a positive integer, got 0"),
    ("--batch-size", "0", "--batch-size must be a positive integer, got 0"),
    ("--batch-size", "-3", "--batch-size must be a positive integer, got -3"),
    ("--show", "-1", "--show must be a non-negative integer, got -1"),
]
DIAGNOSE = [
    ("--max-groups", "0", "--max-groups must be a positive integer, got 0"),
    ("--sbc-datasets", "1", SBC + "1"),
    ("--sbc-datasets", "-1", SBC + "-1"),
]
CASES = [("infer", *case) for case in SHARED + INFER]
CASES += [("diagnose", *case) for case in SHARED + DIAGNOSE]


@pytest.mark.parametrize(("command", "option", "value", "message"), CASES)
def test_a_bad_number_is_one_line_before_anything_is_read(
    command, option, value, message, grouped_csv, tmp_path, capsys, no_checkpoint
):
    argv = _argv(command, grouped_csv, tmp_path)
    assert _one_line(capsys, [*argv, option, value]) == f"iai {command}: error: {message}"


@pytest.mark.parametrize("command", ["infer", "diagnose"])
@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["--x", "x0", "x0", "x1:x7", "--y", "y"], "--x: column 'x0' is already named twice "
         "in --x"),
        (["--x", "x0:x7", "--y", "x0"], "--y: column 'x0' is already named in --x"),
        (["--x", "x0:x7", "--y", "y", "y"], "--y: column 'y' is already named twice in --y"),
        (["--x", "x0,x1:x7", "--y", "y", "--group", "x3"], "--group: column 'x3' is already "
         "named in --x"),
    ],
    ids=["x twice", "y in x", "y twice", "group in x"],
)  # fmt: skip
def test_a_column_named_twice_is_one_line(
    command, columns, message, grouped_csv, tmp_path, capsys, no_checkpoint
):
    argv = [command, "linear_regression", str(grouped_csv), *columns]
    argv += ["--out", str(tmp_path / ("o.nc" if command == "infer" else "r.html"))]
    err = _one_line(capsys, argv)
    assert err == f"iai {command}: error: {message}; each column can be used once"


def test_show_zero_prints_no_summary(grouped_csv, tmp_path, capsys):
    argv = _argv("infer", grouped_csv, tmp_path)
    assert main([*argv, "--group", "unit", "--num-samples", "20", "--show", "0"]) == 0
    assert capsys.readouterr().out == ""
    assert main([*argv, "--group", "unit", "--num-samples", "20", "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert "w[g01, 7]" in out and "g02" not in out
