"""The CLI's errors are one line on stderr, exit status 2, naming what to fix."""

import pytest

from iai_prob.cli import main


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def infer_argv(grouped_csv, tmp_path):
    return ["infer", "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y",
            "--out", str(tmp_path / "o.nc"), "--no-progress"]  # fmt: skip


def test_wrong_column(capsys, infer_argv):
    err = _error(capsys, [*infer_argv, "--group", "school"])
    assert err.startswith("iai infer: error: --group: no column 'school' in grouped.csv")
    infer_argv[4] = "x0,x9"
    assert "--x: no column 'x9' in grouped.csv (its columns: x0," in _error(capsys, infer_argv)


def test_missing_data_file(capsys, infer_argv, tmp_path):
    infer_argv[2] = str(tmp_path / "missing.csv")
    assert "data file" in _error(capsys, infer_argv) and "missing.csv' does not exist" in (
        _error(capsys, infer_argv)
    )


def test_mismatched_checkpoint(capsys, infer_argv):
    infer_argv[4] = "x0:x2"
    err = _error(capsys, infer_argv)
    assert "checkpoint 'linear_regression' is for LinearRegression(dim=8" in err
    assert "needs 8 --x column(s) and 1 --y column(s), got 3 and 1" in err


def test_missing_checkpoint_and_bad_output(capsys, infer_argv, tmp_path):
    infer_argv[1] = str(tmp_path / "runs" / "nothing")
    err = _error(capsys, infer_argv)
    assert "checkpoint" in err and "is neither a file" in err and "linear_regression" in err
    infer_argv[1] = "linear_regression"
    infer_argv[-2] = str(tmp_path / "o.csv")
    assert "--out must name a netCDF file" in _error(capsys, infer_argv)


def test_checkpoint_for_another_model(capsys, infer_argv, tmp_path):
    # a guide trained for linear_regression loaded for logistic_regression's model
    from iai_prob import pretrained

    pretrained.load("linear_regression").save(tmp_path / "lr" / "guide")
    infer_argv[1] = str(tmp_path / "lr")
    infer_argv += ["--model", "iai_prob.models:LogisticRegression"]
    err = _error(capsys, infer_argv)
    assert "was trained for model {'config'" in err and "not for" in err


def test_unknown_model_for_train(capsys, tmp_path):
    err = _error(capsys, ["train", "no_such_family", "--out", str(tmp_path)])
    assert "unknown model 'no_such_family'" in err and "linear_regression" in err
    err = _error(capsys, ["train", "no_such_module:model", "--x-dim", "2", "--out", str(tmp_path)])
    assert "model: cannot import 'no_such_module'" in err
