"""An observation outside the support of the model's likelihood (a Bernoulli's y of 2 or
0.5) is one line naming the column, the value and its data row, wherever it is in the
file, for ``iai infer`` and ``iai diagnose``."""

import pytest
import torch

from iai_prob import pretrained
from iai_prob.cli import main
from iai_prob.cli.infer import _reason


@pytest.fixture(scope="module")
def logistic_frame():
    """3 groups of 40 rows from the shipped logistic-regression guide's family."""
    import pandas as pd

    family = pretrained.load("logistic_regression").family
    _, x, y = family.sample(3, 40, generator=torch.Generator().manual_seed(0))
    frame = pd.DataFrame(x.reshape(-1, 8).numpy(), columns=[f"x{i}" for i in range(8)])
    frame["y"] = y.reshape(-1).numpy()
    frame["g"] = ["a"] * 40 + ["b"] * 40 + ["c"] * 40
    return frame


def _bad_file(frame, tmp_path, row, value):
    frame = frame.copy()
    frame.loc[row - 1, "y"] = value  # data row ``row`` (1-based)
    frame.to_csv(tmp_path / "logit.csv", index=False)
    return tmp_path / "logit.csv"


def _error(capsys, argv):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # before the error: warnings, and the line of iai diagnose saying what it reads
    before = [line for line in lines[:-1] if not line.startswith("diagnosing ")]
    assert all(line.startswith("iai ") and ": warning: " in line for line in before), lines
    return lines[-1]


@pytest.mark.parametrize("value", [2, 0.5])
@pytest.mark.parametrize(
    ("row", "chunk_rows", "group"),
    [(1, 65_536, "g"), (6, 65_536, None), (100, 30, "g"), (100, 30, None)],
    ids=["first row", "streamed", "past the first chunk", "streamed past the first chunk"],
)
def test_y_outside_the_bernoulli_support_is_named(
    value, row, chunk_rows, group, logistic_frame, tmp_path, capsys
):
    # was: "checkpoint 'logistic_regression' does not fit these columns (8 --x, 1 --y):
    # Error while computing log_prob at site 'y':", the reason cut off
    data = _bad_file(logistic_frame, tmp_path, row, value)
    argv = ["infer", "logistic_regression", str(data), "--x", "x0:x7", "--y", "y"]
    argv += ["--out", str(tmp_path / "l.nc"), "--chunk-rows", str(chunk_rows), "--no-progress"]
    err = _error(capsys, argv + (["--group", group] if group else []))
    assert err.startswith(f"iai infer: error: --y column 'y' of logit.csv holds {value:g} in ")
    assert f"in data row {row} (1 such row(s) among data rows " in err
    assert err.endswith(
        "the model's Bernoulli likelihood (site 'y') needs 0 or 1; recode the column, or use "
        "a checkpoint of a model for these values"
    )
    assert "does not fit these columns" not in err and "tensor(" not in err


def test_diagnose_names_the_value_too(logistic_frame, tmp_path, capsys):
    data = _bad_file(logistic_frame, tmp_path, 70, 3)
    argv = ["diagnose", "logistic_regression", str(data), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "g", "--out", str(tmp_path / "r.html"), "--chunk-rows", "50"]
    err = _error(capsys, [*argv, "--sbc-datasets", "0", "--no-progress"])
    assert err.startswith("iai diagnose: error: --y column 'y' of logit.csv holds 3 in data row 70")


def test_the_reason_below_pyros_first_line_is_kept():
    error = ValueError(
        "Error while computing log_prob at site 'y':\nExpected value argument to be within the "
        "support (Boolean())\n Trace Shapes: ..."
    )
    assert _reason(error) == (
        "Error while computing log_prob at site 'y': Expected value argument to be within "
        "the support (Boolean())"
    )
    assert _reason(ValueError("one line")) == "one line"
