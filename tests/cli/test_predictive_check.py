"""``iai infer`` warns when the model does not reproduce the spread of y (a posterior
predictive check per dataset), e.g. data noisier than the guide's fixed noise scale."""

import numpy as np
import pytest

from iai_prob.cli import main
from iai_prob.cli.assumptions import spread_warning
from iai_prob.datasets import dataset_path


def _noisier(frame, groups, sd=3.0, seed=1):
    """``frame`` with extra noise of sd ``sd`` on the y of ``groups``."""
    rng = np.random.default_rng(seed)
    rows = frame["unit"].isin(groups)
    frame.loc[rows, "y"] += sd * rng.standard_normal(rows.sum())
    return frame


def _warnings(err):
    return [line for line in err.splitlines() if line.startswith("iai infer: warning: ")]


def test_data_noisier_than_the_fixed_noise_get_one_warning(
    tmp_path, make_grouped_frame, shipped_guide, capsys
):
    # the QA case: 10 groups of 50 rows with residual sd 3 under noise_scale 0.5 passed
    # silently, with posterior sds about 6 times too small
    frame = make_grouped_frame(shipped_guide.family, [50] * 10)
    _noisier(frame, frame["unit"].unique()).to_csv(tmp_path / "noisy.csv", index=False)
    argv = ["infer", "linear_regression", str(tmp_path / "noisy.csv"), "--x", "x0:x7"]
    argv += ["--y", "y", "--out", str(tmp_path / "p.nc"), "--num-samples", "20", "--show", "0"]
    assert main([*argv, "--group", "unit", "--no-progress"]) == 0  # the run completes
    (warning,) = _warnings(capsys.readouterr().err)
    assert warning.startswith(
        "iai infer: warning: posterior predictive check: y varies more than the model allows "
        "(p-value of sd(y) below 0.005 in 10 of 10 groups: g00, g01, g02, g03, g04 and 5 more)"
    )
    assert (
        "the model (fixed when the guide was trained: dim = 8, noise_scale = 0.5, "
        "prior_scale = 1.0) does not fit these data" in warning
    )
    assert "iai diagnose" in warning and "iai train linear_regression_unknown_noise" in warning
    # all rows as one streamed dataset: the same check on its first rows
    assert main([*argv, "--no-progress"]) == 0
    (warning,) = _warnings(capsys.readouterr().err)
    assert "y varies more than the model allows (p-value of sd(y) 0.000, below 0.005)" in warning


@pytest.mark.parametrize("values_per_call", [None, 1], ids=["batched", "one group per call"])
def test_only_the_noisier_groups_are_named(
    values_per_call, tmp_path, make_grouped_frame, shipped_guide, capsys, monkeypatch
):
    import iai_prob.cli.assumptions as check

    if values_per_call is not None:
        monkeypatch.setattr(check, "_VALUES_PER_CALL", values_per_call)
    frame = make_grouped_frame(shipped_guide.family, [40, 40, 60, 40, 60, 40], seed=3)
    _noisier(frame, ["g01", "g04"]).to_csv(tmp_path / "some.csv", index=False)
    argv = ["infer", "linear_regression", str(tmp_path / "some.csv"), "--x", "x0:x7", "--y"]
    argv += ["y", "--group", "unit", "--out", str(tmp_path / "p.nc"), "--num-samples", "20"]
    assert main([*argv, "--no-progress"]) == 0
    (warning,) = _warnings(capsys.readouterr().err)
    assert "(p-value of sd(y) below 0.005 in 2 of 6 groups: g01, g04)" in warning


@pytest.mark.parametrize(
    ("name", "group"),
    [("schools_demo.csv", "school"), ("linear_regression_demo.csv", None)],
)
def test_the_shipped_datasets_get_no_warning(name, group, tmp_path, capsys):
    argv = ["infer", "linear_regression", str(dataset_path(name)), "--x", "x0:x7", "--y", "y"]
    argv += ["--out", str(tmp_path / "p.nc"), "--num-samples", "20", "--no-progress"]
    assert main(argv + (["--group", group] if group else [])) == 0
    assert "warning" not in capsys.readouterr().err


def test_the_warning_says_which_way_and_names_few_groups():
    labels = [f"s{i}" for i in range(9)]
    pvalues = {"y": np.array([0.5, 0.999, 1.0, 0.3, 0.996, 0.997, 0.998, 0.999, 1.0])}
    warning = spread_warning(pvalues, labels)
    assert warning.startswith(
        "posterior predictive check: y varies less than the model allows (p-value of sd(y) "
        "above 0.995 in 7 of 9 groups: s1, s2, s4, s5, s6 and 2 more): the model does not "
        "fit these data"
    )
    assert spread_warning({"y": np.array([0.005, 0.5, 0.995])}, ["a", "b", "c"]) is None


def test_no_more_flagged_datasets_than_chance_gives_no_warning():
    # a correct model leaves about 1 in 300 two-row datasets above 0.995 by chance
    labels = [f"u{i}" for i in range(300)]
    pvalues = np.full(300, 0.5)
    pvalues[[7, 90, 200]] = 1.0  # 1% of the datasets: chance
    assert spread_warning({"y": pvalues}, labels) is None
    pvalues[250] = 0.0  # one more is beyond chance
    warning = spread_warning({"y": pvalues}, labels)
    assert "y varies more than the model allows (p-value of sd(y) below 0.005 in 1 of 300 " in (
        warning
    )
    assert "y varies less than the model allows (p-value of sd(y) above 0.995 in 3 of 300 " in (
        warning
    )
    # one dataset: any flag warns
    assert spread_warning({"y": np.array([0.001])}, None).startswith(
        "posterior predictive check: y varies more than the model allows (p-value of sd(y) "
        "0.001, below 0.005)"
    )
