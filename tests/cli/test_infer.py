"""``iai infer`` end to end: grouped CSV and streamed Parquet to netCDF InferenceData."""

import arviz as az
import numpy as np
import torch

from iai_prob.cli import main


def test_grouped_csv_gives_one_posterior_per_group(tmp_path, grouped_csv, shipped_guide, capsys):
    out = tmp_path / "post.nc"
    argv = ["infer", "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "unit", "--out", str(out), "--num-samples", "200", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "w[g00, 0]" in printed.out and "hdi_95%" in printed.out
    assert "24 groups of 12 to 33 rows" in printed.err and "groups/s" in printed.err
    idata = az.from_netcdf(out)
    w = idata.posterior["w"]
    assert w.dims == ("chain", "draw", "group", "w_dim_0") and w.shape == (1, 200, 24, 8)
    assert list(idata.posterior["group"].values) == [f"g{i:02d}" for i in range(24)]
    assert idata.sample_stats["log_importance_weight"].dims == ("chain", "draw", "group")
    # converged and k̂ per group: in the summary and in the file
    assert "converged: 24 of 24; k̂ > 0.7: 0" in printed.err
    assert "converged" in printed.out and "k_hat" in printed.out
    assert idata.sample_stats["converged"].dims == ("group",)
    assert bool(idata.sample_stats["converged"].all())
    assert (idata.sample_stats["khat"].values < 0.7).all()
    # the draws of group g05 are those of its own posterior
    frame = __import__("pandas").read_csv(grouped_csv)
    rows = frame[frame["unit"] == "g05"]
    q = shipped_guide.posterior(
        torch.tensor(rows[[f"x{i}" for i in range(8)]].to_numpy(), dtype=torch.float32),
        torch.tensor(rows["y"].to_numpy(), dtype=torch.float32),
    )
    draws = w.sel(group="g05").values.reshape(-1, 8)
    assert np.abs(draws.mean(0) - q.mean.numpy()).max() < 4 * q.stddev.max().item() / np.sqrt(200)


def test_streamed_parquet_gives_the_full_inference_data(tmp_path, shipped_guide, capsys):
    family = shipped_guide.family
    _, x, y = family.sample(1, 700, generator=torch.Generator().manual_seed(5))
    frame = __import__("pandas").DataFrame(x[0].numpy(), columns=[f"c{i}" for i in range(8)])
    frame["target"] = y[0].numpy()
    frame.to_parquet(tmp_path / "big.parquet", row_group_size=128)
    out = tmp_path / "one.nc"
    argv = ["infer", "linear_regression", str(tmp_path / "big.parquet"), "--x", "c0,c1,c2"]
    argv += ["c3:c7", "--y", "target", "--out", str(out), "--chunk-rows", "100"]
    assert main([*argv, "--num-samples", "100", "--no-progress"]) == 0
    assert "700 rows of big.parquet streamed" in capsys.readouterr().err
    idata = az.from_netcdf(out)
    assert {"posterior", "log_likelihood", "observed_data"} <= set(idata.groups())
    exact = family.exact_posterior(x[0], y[0])
    mean = idata.posterior["w"].values.reshape(-1, 8).mean(0)
    assert np.abs(mean - exact.mean.numpy()).max() < 0.05


def test_data_unlike_the_training_data_get_one_warning(tmp_path, make_grouped_frame, capsys):
    from iai_prob import pretrained

    frame = make_grouped_frame(pretrained.load("linear_regression").family, [12, 20] * 3)
    frame["y"] *= 10  # the guide was trained on y of root mean square 1.3-4.8
    frame.to_csv(tmp_path / "tenfold.csv", index=False)
    out = tmp_path / "post.nc"
    argv = ["infer", "linear_regression", str(tmp_path / "tenfold.csv"), "--x", "x0:x7"]
    argv += ["--y", "y", "--group", "unit", "--out", str(out), "--num-samples", "20"]
    assert main([*argv, "--no-progress"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings[0].startswith(
        "iai infer: warning: the data's scale is far outside what checkpoint "
        "'linear_regression' was trained on: --y root mean square"
    )
    # y ten times too large also varies more than the fixed noise allows: the second line
    assert len(warnings) == 2 and warnings[1].startswith(
        "iai infer: warning: posterior predictive check: y varies more than the model allows"
    )
    assert az.from_netcdf(out).posterior["w"].shape == (1, 20, 6, 8)  # the run completed


def test_a_negative_max_steps_is_refused_in_one_line(tmp_path, grouped_csv, capsys):
    argv = ["infer", "linear_regression", str(grouped_csv), "--x", "x0:x7", "--y", "y"]
    argv += ["--group", "unit", "--out", str(tmp_path / "post.nc"), "--max-steps", "-1"]
    assert main(argv) == 2
    assert "--max-steps must be a non-negative integer" in capsys.readouterr().err
