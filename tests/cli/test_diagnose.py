"""``iai diagnose``: the HTML report for a grouped CSV, and its one-line errors."""

import pytest

from iai_prob.cli import main


def test_report_for_a_batch_of_groups(tmp_path, grouped_csv, capsys):
    out = tmp_path / "report.html"
    argv = ["diagnose", "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "unit", "--max-groups", "3", "--num-samples", "100", "--passes", "2"]
    assert main([*argv, "--sbc-datasets", "0", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr()
    # 24 groups of sizes 12, 20, 33: the report covers 3 of the 8 of 12 rows, and says so
    selection = (
        "grouped.csv: only the first 3 of the 8 groups of 12 rows (the most common size; "
        "raise --max-groups or name groups with --groups): g00, g03, g06; 21 of its 24 "
        "groups are not in this report."
    )
    assert f"diagnosing {selection}" in printed.err
    # the verdict covers the guide (k̂) and the model's fit (PPC, LOO)
    assert "- PSIS k̂" in printed.out and "- Posterior predictive check: 3 of 3" in printed.out
    assert "- PSIS-LOO (y) per dataset: p_loo median" in printed.out
    # --passes 2 over 12 rows in mini-batches of 64: two refinement steps
    assert "after 2 refinement steps" in printed.out
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert selection in page and "after 2 refinement passes" in page
    # group values and column names label the report
    assert "w[g00, 0]" in page and "w[0, 0]" not in page
    assert "x: x0, x1, x2, x3, x4, x5, x6, x7" in page


def test_bad_passes_is_one_line_before_reading(tmp_path, grouped_csv, capsys):
    argv = ["diagnose", "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y"]
    assert main([*argv, "--passes", "0", "--out", str(tmp_path / "r.html")]) == 2
    assert capsys.readouterr().err.strip() == (
        "iai diagnose: error: --passes must be a positive integer, got 0"
    )


def test_group_selection_errors(tmp_path, grouped_csv, capsys):
    argv = ["diagnose", "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "unit", "--out", str(tmp_path / "r.html")]
    assert main([*argv, "--groups", "g00", "g01"]) == 2  # sizes 12 and 20
    err = capsys.readouterr().err.strip()
    assert err == (
        "iai diagnose: error: --groups: a report covers groups of one size; "
        "these have sizes [12, 20]"
    )
    assert main([*argv, "--groups", "zz"]) == 2
    assert "--groups: no group 'zz'" in capsys.readouterr().err


def test_groups_are_named_verbatim_one_argument_each(tmp_path, grouped_csv, capsys):
    import pandas as pd

    # keys that differ only in spaces, and one with a comma: each is its own group
    frame = pd.read_csv(grouped_csv)
    keys = {"g00": " 7", "g03": "7 ", "g06": "7", "g09": "a,b"}  # all of 12 rows
    frame = frame[frame["unit"].isin(keys)].assign(unit=lambda f: f["unit"].map(keys))
    frame.to_csv(tmp_path / "keys.csv", index=False)
    argv = ["diagnose", "linear_regression", str(tmp_path / "keys.csv"), "--x", "x0:x7"]
    argv += ["--y", "y", "--group", "unit", "--out", str(tmp_path / "r.html")]
    argv += ["--num-samples", "50", "--sbc-datasets", "0", "--no-progress"]
    assert main([*argv, "--groups", " 7", "a,b"]) == 0
    assert (
        "diagnosing keys.csv: 2 group(s) of 12 rows named with --groups: ' 7', 'a,b'; "
        "2 of its 4 groups are not in this report."
    ) in capsys.readouterr().err
    assert main([*argv, "--groups", ","]) == 2  # was an IndexError traceback
    assert (
        capsys.readouterr()
        .err.strip()
        .startswith(
            "iai diagnose: error: --groups: no group ',' (first groups: ['7', '7 ', ' 7', 'a,b'])"
        )
    )


def test_group_names_with_commas_get_a_hint(tmp_path, grouped_csv, capsys):
    argv = ["diagnose", "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "unit", "--out", str(tmp_path / "r.html")]
    assert main([*argv, "--groups", "g00,g03"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iai diagnose: error: --groups: no group 'g00,g03'")
    assert err.endswith("; name groups as separate arguments: --groups g00 g03")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["g00", "g03", "g00"], "--groups: 'g00' is named twice; name each group once"),
        (["g00", ""], "--groups: an empty name; a group key is never empty"),
    ],
    ids=["repeated", "empty"],
)
def test_repeated_and_empty_group_names_are_one_line_before_reading(
    names, message, tmp_path, grouped_csv, capsys, monkeypatch
):
    import iai_prob.cli.loading

    def no_inference(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded: --groups is checked too late")

    monkeypatch.setattr(iai_prob.cli.loading, "load_checkpoint", no_inference)
    argv = ["diagnose", "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "unit", "--out", str(tmp_path / "r.html"), "--groups", *names]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"iai diagnose: error: {message}"


@pytest.mark.parametrize("selection", [[], ["--groups", "g00", "g03"], ["--max-groups", "2"]])
def test_nuts_with_several_groups_is_one_line_before_reading(
    selection, tmp_path, grouped_csv, capsys, monkeypatch
):
    import iai_prob.cli.loading

    def no_inference(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded: --nuts is checked too late")

    monkeypatch.setattr(iai_prob.cli.loading, "load_checkpoint", no_inference)
    argv = ["diagnose", "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "unit", "--nuts", "--out", str(tmp_path / "r.html"), *selection]
    assert main(argv) == 2  # was "nuts=True compares one dataset; ..." after reading
    assert capsys.readouterr().err.strip() == (
        "iai diagnose: error: --nuts compares one dataset: with --group, name one group "
        "(--groups NAME) or give --max-groups 1"
    )
