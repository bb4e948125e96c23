"""``iai train``: task families and a user's own ``module:function`` model, resumable,
reproducible, one run per ``--out``, and one-line errors for bad options."""

import argparse
import json
import os
import textwrap

import arviz as az
import pytest
import torch

from iai_prob.cli import main
from iai_prob.inference.checkpoint import read_checkpoint
from iai_prob.training_folder import lock_folder

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
    summary = capsys.readouterr().out
    assert "trained 3 steps" in summary
    # the held-out score of the saved guide, as its card records it
    validation = card["validation"]
    assert f"validation score {validation['score']:.4g}" in summary
    assert f"untrained {validation['untrained']:.4g}, kept step {validation['step']})" in summary


def test_user_model_trains_and_infers(
    tmp_path, monkeypatch, capsys, make_grouped_frame, shipped_guide
):
    (tmp_path / "my_models.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["train", "my_models:model", "--x-dim", "8", "--out", "runs/mine", *TINY]) == 0
    assert "next: iai infer runs/mine DATA.csv --model my_models:model" in capsys.readouterr().out
    card = json.loads((tmp_path / "runs" / "mine" / "guide.json").read_text())
    assert card["entrypoint"] == "my_models:model" and card["layout"][0][0] == "w"
    make_grouped_frame(shipped_guide.family, [10, 10, 14]).to_csv("d.csv", index=False)
    argv = ["infer", "runs/mine", "d.csv", "--x", "x0:x7", "--y", "y", "--group", "unit"]
    argv += ["--model", "my_models:model"]  # a model is imported only from the command line
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


def test_another_files_model_of_the_same_name_is_another_run(
    tmp_path, capsys, make_grouped_frame, shipped_guide
):
    (tmp_path / "other").mkdir()
    for folder in (tmp_path, tmp_path / "other"):
        (folder / "models.py").write_text(USER_MODEL)
    make_grouped_frame(shipped_guide.family, [12, 16, 20]).to_csv(tmp_path / "d.csv", index=False)
    data = ["--data", str(tmp_path / "d.csv"), "--x", "x0:x7", "--y", "y", "--group", "unit"]
    out = ["--out", str(tmp_path / "real"), *TINY]
    assert main(["train", f"{tmp_path / 'models.py'}:model", *data, *out]) == 0
    capsys.readouterr()
    assert main(["train", f"{tmp_path / 'other' / 'models.py'}:model", *data, *out]) == 2
    err = capsys.readouterr().err
    assert "holds a run with model" in err and str(tmp_path / "other" / "models.py") in err


def _family_argv(out, *extra):
    config = ["--config", '{"dim": 2}']
    return ["train", "linear_regression", *config, "--out", str(out), *TINY, *extra]


def _last(out):
    return read_checkpoint(out / "last")


def test_the_same_command_gives_the_same_guide_bit_for_bit(tmp_path):
    resumed, straight, other = tmp_path / "resumed", tmp_path / "straight", tmp_path / "other"
    assert main(_family_argv(resumed)) == 0  # 2 steps, then resumed to 3
    assert main([*_family_argv(resumed), "--steps", "3"]) == 0
    assert main([*_family_argv(straight), "--steps", "3"]) == 0
    (tensors, card), (expected, expected_card) = _last(resumed), _last(straight)
    assert card["losses"] == expected_card["losses"]
    assert tensors.keys() == expected.keys()
    assert all(torch.equal(tensors[name], value) for name, value in expected.items())
    assert main([*_family_argv(other), "--steps", "3", "--seed", "1"]) == 0
    assert _last(other)[1]["losses"] != expected_card["losses"]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--seed", "1"], "holds a run with seed 0, not 1; pass --overwrite to start again"),
        (["--objective", "reverse_kl"], "holds a run with objective 'mixed', not 'reverse_kl'"),
        (["--posterior", "diagonal"], "posterior family 'full_rank', not 'diagonal'"),
        (["--batch-size", "8"], "batch size 64, not 8"),
        (["--learning-rate", "0.01"], "learning rate 0.001, not 0.01"),
        (["--max-points", "32"], "points per task [8, 24], not [8, 32]"),
    ],
    ids=["seed", "objective", "posterior", "batch-size", "learning-rate", "points"],
)
def test_an_out_holding_another_run_is_refused(change, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_family_argv(out)) == 0
    err = _error(capsys, [*_family_argv(out), *change])
    assert err.startswith(f"iai train: error: --out {out} holds a run with")
    assert message in err
    assert _last(out)[1]["step"] == 2  # untouched


def test_another_model_is_refused_and_overwrite_starts_again(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_family_argv(out)) == 0
    argv = _family_argv(out)
    argv[argv.index("--config") + 1] = '{"dim": 3}'
    err = _error(capsys, argv)  # weights of another shape: one line, no state-dict traceback
    assert "holds a run with model linear_regression(dim=2, " in err
    assert "not linear_regression(dim=3, " in err
    assert main([*argv, "--overwrite"]) == 0
    _, card = _last(out)
    assert card["run"]["model"]["config"]["dim"] == 3 and card["step"] == 2
    assert main(argv) == 0  # now it is the folder's run, and resumes


def test_an_out_in_use_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with lock_folder(out):
        err = _error(capsys, _family_argv(out))
    assert f"is in use by another training process (pid {os.getpid()})" in err
    assert not (out / "last.json").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--steps", "0"], "--steps must be a positive integer, got 0"),
        (["--steps", "-1"], "--steps must be a positive integer, got -1"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be a positive integer, got 0"),
        (["--tasks-per-step", "0"], "--tasks-per-step must be a positive integer, got 0"),
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--min-points", "0"], "--min-points and --max-points must satisfy 1 <= min <= max"),
        (["--min-points", "30"], "got 30 and 24"),
        (["--learning-rate", "-1"], "--learning-rate must be a positive finite number"),
        (["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
        (["--config", '{"dimm": 2}'], "--config: linear_regression takes no option 'dimm'; its"),
        (["--config", '{"dim": 2'], "--config is not valid JSON"),
        (["--config", "[2]"], "--config: linear_regression: the configuration must be an object"),
        (["--config", '{"dim": null}'], "--config: linear_regression: bad configuration"),
        (["--config", '{"dim": 0}'], "--config: dim must be a positive integer, got 0"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_bad_options_are_one_line_before_any_work(change, message, tmp_path, capsys):
    out = tmp_path / "run"
    err = _error(capsys, [*_family_argv(out), *change])
    assert err.startswith("iai train: error: ") and message in err
    assert not out.exists()


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_out_that_cannot_be_a_folder_is_refused(where, tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    out = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "run"
    assert "taken is a file" in _error(capsys, _family_argv(out))


def test_a_user_model_is_the_same_run_however_its_file_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "spelt.py").write_text(USER_MODEL)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "spelt.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    common = ["--x-dim", "2", "--out", "run", *TINY]
    assert main(["train", "spelt.py:model", *common]) == 0
    for spelling in ("spelt:model", f"{tmp_path}/spelt.py:model", "./spelt.py:model"):
        steps = _last(tmp_path / "run")[1]["step"] + 1
        assert main(["train", spelling, *common, "--steps", str(steps)]) == 0, spelling
        assert _last(tmp_path / "run")[1]["step"] == steps  # resumed, not refused
    capsys.readouterr()
    # another file is another run, named readably (no internal module or <locals> names)
    err = _error(capsys, ["train", "other/spelt.py:model", *common, "--steps", "9"])
    here, other = (tmp_path / "spelt.py").resolve(), (tmp_path / "other/spelt.py").resolve()
    assert f"holds a run with model '{here}:model'" in err and f"'{other}:model'" in err
    assert "_iai_user" not in err and "<locals>" not in err


def test_a_prior_predictive_identity_names_its_covariates(tmp_path, monkeypatch, capsys):
    (tmp_path / "mymodel.py").write_text(
        USER_MODEL
        + "\n\ndef covariates(num_tasks, num_points, generator):\n"
        + "    import torch\n\n"
        + "    return (torch.randn(num_tasks, num_points, 2, generator=generator),)\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["train", "mymodel.py:model", "--x-dim", "2", "--out", "run", *TINY]) == 0
    tasks = _last(tmp_path / "run")[1]["run"]["tasks"]
    file = (tmp_path / "mymodel.py").resolve()
    assert tasks["covariates"] == {"x_dim": 2} and tasks["prior_predictive"] == f"{file}:model"
    argv = ["train", "mymodel.py:model", "--covariates", "mymodel.py:covariates"]
    err = _error(capsys, [*argv, "--out", "run", *TINY])
    assert (
        f"with covariates x ~ N(0, I_2), not prior predictive of '{file}:model' with covariates "
        f"'{file}:covariates'" in err
    )


IMPROPER_MODEL = USER_MODEL.replace(
    "dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1)",
    "dist.ImproperUniform(constraints.real, (), (x.shape[-1],))",
).replace("import pyro\n", "import pyro\nfrom torch.distributions import constraints\n")


def test_an_improper_prior_is_named_before_any_step(tmp_path, monkeypatch, capsys):
    assert "ImproperUniform" in IMPROPER_MODEL
    (tmp_path / "odd.py").write_text(IMPROPER_MODEL)
    monkeypatch.chdir(tmp_path)
    err = _error(capsys, ["train", "odd.py:model", "--x-dim", "2", "--out", "run", *TINY])
    assert err == (
        "iai train: error: latent site 'w' has an improper prior (ImproperUniform); the guide "
        "samples and scores the prior, so give 'w' a proper distribution (e.g. dist.Normal(0, 10))"
    )
    assert not (tmp_path / "run" / "last.json").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--x-dim", "0"], "--x-dim must be a positive integer, got 0"),
        (["--x-dim", "-2"], "--x-dim must be a positive integer, got -2"),
        (["--x-dim", "2", "--y", "y"], "--y applies only with --data, naming its columns; give"),
        (
            ["--x-dim", "2", "--x", "a", "--group", "g"],
            "--x, --group apply only with --data, naming its columns; give --data FILE or drop",
        ),
        (["--x-dim", "2", "--config", '{"dim": 2}'], "--config applies to task families, not"),
        (["--x-dim", "2", "--data", "d.csv"], "exactly one of --x-dim, --covariates, --data; got"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_bad_task_options_of_a_user_model_are_one_line_before_any_work(
    change, message, tmp_path, monkeypatch, capsys
):
    (tmp_path / "mymodel.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    err = _error(capsys, ["train", "mymodel.py:model", "--out", "run", *TINY, *change])
    assert err.startswith("iai train: error: ") and message in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "change",
    [
        ["--x-dim", "2"],
        ["--covariates", "mymodel:covariates"],
        ["--data", "d.csv", "--y", "y", "--group", "g"],
        ["--x", "x0"],
    ],
    ids=lambda value: " ".join(value),
)
def test_options_of_a_user_model_are_refused_for_a_task_family(change, tmp_path, capsys):
    out = tmp_path / "run"
    err = _error(capsys, [*_family_argv(out), *change])  # were ignored silently
    given = ", ".join(option for option in change if option.startswith("--"))
    assert err.startswith(f"iai train: error: {given} appl")
    assert "to a module:function model, not to the task family 'linear_regression'" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('{"dim": 2, "dim": 3}', "--config names 'dim' more than once; give each option once"),
        ('{"dim": 2, "noise_scale": 1, "dim": 2}', "--config names 'dim' more than once"),
    ],
)
def test_a_config_key_given_twice_is_refused(config, message, tmp_path, capsys):
    out = tmp_path / "run"
    err = _error(capsys, [*_family_argv(out), "--config", config])  # the last value won
    assert err.startswith(f"iai train: error: {message}")
    assert not out.exists()


def test_every_task_option_says_what_happens_without_it():
    from iai_prob.cli import _parser

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = commands.choices["train"]
    for action in parser._actions:
        if action.option_strings and action.default is None and not action.required:
            text = " ".join(parser._get_formatter()._format_action(action).split())
            assert "(default: " in text, text
