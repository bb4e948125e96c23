"""``iai train``: task families and a user's own ``module:function`` model, resumable."""

import json
import textwrap

import arviz as az

from iai_prob.cli import main

TINY = ["--steps", "2", "--tasks-per-step", "4", "--min-points", "8", "--max-points", "24"]
TINY += ["--encoder", "deep_sets", "--no-progress"]

USER_MODEL = textwrap.dedent(
    """
    import contextlib

    import pyro
    import pyro.distributions as dist


    def model(x, y=None):
        batched = x.dim() == 3
        tasks = pyro.plate("tasks", x.shape[0], dim=-2) if batched else contextlib.nullcontext()
        with tasks:
            w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
            sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
            with pyro.plate("data", x.shape[-2], dim=-1):
                return pyro.sample("y", dist.Normal((x * w).sum(-1), sigma), obs=y)
    """
)


def test_family_training_resumes(tmp_path, capsys):
    out = tmp_path / "lr"
    argv = ["train", "linear_regression", "--config", '{"dim": 2}', "--out", str(out), *TINY]
    assert main(argv) == 0
    assert json.loads((out / "last.json").read_text())["step"] == 2
    argv[argv.index("--steps") + 1] = "3"
    assert main(argv) == 0
    card = json.loads((out / "guide.json").read_text())
    assert json.loads((out / "last.json").read_text())["step"] == 3
    assert card["model"] == {
        "family": "linear_regression",
        "config": {"dim": 2, "noise_scale": 0.5, "prior_scale": 1.0},
    }
    assert card["command"].startswith("iai train linear_regression --config")
    assert "trained 3 steps" in capsys.readouterr().out


def test_user_model_trains_and_infers(tmp_path, monkeypatch, make_grouped_frame, shipped_guide):
    (tmp_path / "my_models.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["train", "my_models:model", "--x-dim", "8", "--out", "runs/mine", *TINY]) == 0
    card = json.loads((tmp_path / "runs" / "mine" / "guide.json").read_text())
    assert card["entrypoint"] == "my_models:model" and card["layout"][0][0] == "w"
    make_grouped_frame(shipped_guide.family, [10, 10, 14]).to_csv("d.csv", index=False)
    argv = ["infer", "runs/mine", "d.csv", "--x", "x0:x7", "--y", "y", "--group", "unit"]
    assert main([*argv, "--out", "post.nc", "--num-samples", "50", "--no-progress"]) == 0
    posterior = az.from_netcdf("post.nc").posterior
    assert set(posterior.data_vars) == {"w", "sigma"} and posterior.sizes["group"] == 3
    assert (posterior["sigma"] > 0).all()


def test_user_model_from_real_datasets(tmp_path, make_grouped_frame, shipped_guide):
    (tmp_path / "models.py").write_text(USER_MODEL)
    make_grouped_frame(shipped_guide.family, [12, 16, 20]).to_csv(tmp_path / "d.csv", index=False)
    out = tmp_path / "real"
    argv = ["train", f"{tmp_path / 'models.py'}:model", "--data", str(tmp_path / "d.csv")]
    argv += ["--x", "x0:x7", "--y", "y", "--group", "unit", "--out", str(out), *TINY]
    assert main(argv) == 0
    card = json.loads((out / "guide.json").read_text())
    assert card["budget"]["objective"] == "reverse_kl"
    assert card["entrypoint"] == f"{tmp_path / 'models.py'}:model"
