"""``iai diagnose``: the HTML report for a grouped CSV, and its one-line errors."""

from iai_prob.cli import main


def test_report_for_a_batch_of_groups(tmp_path, grouped_csv, capsys):
    out = tmp_path / "report.html"
    argv = ["diagnose", "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "unit", "--max-groups", "3", "--num-samples", "100"]
    assert main([*argv, "--sbc-datasets", "0", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "diagnosing 3 group(s) of 12 rows" in printed.err
    assert "PSIS k̂" in printed.out
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page


def test_group_selection_errors(tmp_path, grouped_csv, capsys):
    argv = ["diagnose", "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "unit", "--out", str(tmp_path / "r.html")]
    assert main([*argv, "--groups", "g00,g01"]) == 2  # sizes 12 and 20
    err = capsys.readouterr().err.strip()
    assert err == (
        "iai diagnose: error: --groups: a report covers groups of one size; "
        "these have sizes [12, 20]"
    )
    assert main([*argv, "--groups", "zz"]) == 2
    assert "--groups: no group 'zz'" in capsys.readouterr().err
