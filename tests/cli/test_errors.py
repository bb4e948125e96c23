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


# A user's model file that fails while it is imported: (file text, what the line says).
BAD_MODEL_FILES = {
    "syntax-error": (
        "import pyro\n\ndef model(x, y=None)\n    pass\n",
        ["bad.py has a syntax error at line 3: expected ':'"],
    ),
    "exits-at-import": (
        "import sys\n\nsys.exit('usage: bad.py N')\n",
        ["called sys.exit('usage: bad.py N')", "bad.py, line 3", "if __name__ == '__main__'"],
    ),
    "raises-at-import": (
        "x = 1\nraise RuntimeError('no GPU here')\n",
        ["raised RuntimeError: no GPU here", "bad.py, line 2"],
    ),
    "imports-a-missing-package": (
        "import no_such_package_iai\n",
        ["raised ModuleNotFoundError: No module named 'no_such_package_iai'", "bad.py, line 1"],
    ),
}


@pytest.mark.parametrize("row", sorted(BAD_MODEL_FILES))
def test_a_model_file_that_fails_at_import_is_one_line(row, capsys, infer_argv, tmp_path):
    from iai_prob import pretrained

    text, patterns = BAD_MODEL_FILES[row]
    bad = tmp_path / "bad.py"
    bad.write_text(text)
    err = _error(capsys, ["train", f"{bad}:model", "--x-dim", "2", "--out", str(tmp_path / "r")])
    assert err.startswith("iai train: error: model: ")
    assert all(pattern in err for pattern in patterns), err
    pretrained.load("linear_regression").save(tmp_path / "lr" / "guide")
    infer_argv[1] = str(tmp_path / "lr")
    err = _error(capsys, [*infer_argv, "--model", f"{bad}:model"])
    assert err.startswith("iai infer: error: --model: ")
    assert all(pattern in err for pattern in patterns), err


def test_a_module_that_fails_at_import_names_its_file(capsys, tmp_path, monkeypatch):
    (tmp_path / "exits_mod.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    err = _error(capsys, ["train", "exits_mod:model", "--x-dim", "2", "--out", "r"])
    assert "importing 'exits_mod' called sys.exit(3)" in err
    assert f"{tmp_path / 'exits_mod.py'}, line 2" in err


def test_a_model_without_the_tasks_plate_is_one_line_for_train(capsys, tmp_path):
    model = tmp_path / "single.py"
    model.write_text(
        "import pyro, pyro.distributions as dist, torch\n"
        "def model(x, y=None):\n"
        "    w = pyro.sample('w', dist.Normal(torch.zeros(x.shape[-1]), 1.0).to_event(1))\n"
        "    with pyro.plate('data', x.shape[-2]):\n"
        "        return pyro.sample('y', dist.Normal((x * w).sum(-1), 1.0), obs=y)\n"
    )
    argv = ["train", f"{model}:model", "--x-dim", "2", "--steps", "1", "--out", str(tmp_path / "r")]
    err = _error(capsys, [*argv, "--no-progress"])
    assert "site 'y' has batch shape (1, " in err and "pyro.plate('tasks', T, dim=-2)" in err


def test_data_too_large_for_the_guide_is_one_line(capsys, infer_argv, tmp_path):
    # x = 1e20 makes x^T x overflow float32: the refinement's state is not finite
    header = ",".join([f"x{i}" for i in range(8)] + ["y"])
    rows = [",".join(["1e20"] * 8 + ["1e38"])] * 20
    (tmp_path / "huge.csv").write_text("\n".join([header, *rows]) + "\n")
    infer_argv[2] = str(tmp_path / "huge.csv")
    assert main(infer_argv) == 2  # was a RefinementError traceback
    lines = capsys.readouterr().err.strip().splitlines()
    # one error line (after the warning that the data's scale is off the training range)
    assert all(line.startswith("iai infer: warning: ") for line in lines[:-1]), lines
    err = lines[-1]
    assert err.startswith("iai infer: error: the guide's posterior stopped being finite")
    assert "the data are too large for the guide" in err and "rescale the columns" in err
