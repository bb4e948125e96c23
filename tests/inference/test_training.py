"""``fit``: checkpoints, resuming, objectives, task sources."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from iai_prob.inference import (
    DatasetCollection,
    FamilyTasks,
    IterativeAmortizedGuide,
    PriorPredictiveTasks,
    fit,
)
from iai_prob.inference.sources import as_task_source

TINY = {"tasks_per_step": 4, "num_points": (8, 24), "progress": False}


def _fresh_guide(make_guide, model, **options):
    torch.manual_seed(0)  # the refiner's initial weights
    return make_guide(model, **options)


def test_fit_writes_both_checkpoints(linreg, make_guide, tmp_path):
    guide = _fresh_guide(make_guide, linreg)
    result = fit(guide, linreg, steps=3, checkpoint_dir=tmp_path, **TINY)
    assert result.steps == 3 and len(result.losses) == 3
    assert all(math.isfinite(loss) for loss in result.losses)
    names = {path.name for path in tmp_path.iterdir()}
    assert {"last.json", "guide.safetensors", "guide.json"} <= names
    # the training state is versioned: exactly one weights file, the one its card names
    last_weights = [name for name in names if name.startswith("last.")]
    assert (
        len(last_weights) == 2
        and json.loads((tmp_path / "last.json").read_text())["weights_file"] in last_weights
    )
    assert not [name for name in names if name.endswith(".tmp")]
    last = json.loads((tmp_path / "last.json").read_text())
    assert (last["kind"], last["step"]) == ("training", 3)
    card = json.loads((tmp_path / "guide.json").read_text())
    assert card["kind"] == "IterativeAmortizedGuide"
    assert card["budget"]["steps"] == 3
    assert not guide.refiner.training  # fit leaves the guide in eval mode


@pytest.mark.parametrize("objective", ["reverse_kl", "forward_kl", "mixed"])
def test_resumed_fit_equals_an_uninterrupted_one(objective, linreg, make_guide, tmp_path):
    options = {**TINY, "objective": objective, "seed": 5}
    first = _fresh_guide(make_guide, linreg)
    fit(first, linreg, steps=3, checkpoint_dir=tmp_path, **options)
    resumed = _fresh_guide(make_guide, linreg)
    result = fit(resumed, linreg, steps=6, checkpoint_dir=tmp_path, resume=True, **options)
    straight = _fresh_guide(make_guide, linreg)
    reference = fit(straight, linreg, steps=6, **options)
    assert result.steps == 6
    assert result.losses == reference.losses  # bit for bit: a step depends on (seed, step)
    expected = straight.refiner.state_dict()
    for name, value in resumed.refiner.state_dict().items():
        assert torch.equal(value, expected[name]), name
    # and the run did train: the weights moved away from the initial ones
    initial = _fresh_guide(make_guide, linreg)
    initial(*FamilyTasks(linreg).sample(1, 8, torch.Generator().manual_seed(0)).args)
    assert any(
        not torch.allclose(value, initial.refiner.state_dict()[name])
        for name, value in expected.items()
    )


def test_resume_false_starts_over(linreg, make_guide, tmp_path):
    fit(_fresh_guide(make_guide, linreg), linreg, steps=2, checkpoint_dir=tmp_path, **TINY)
    result = fit(
        _fresh_guide(make_guide, linreg),
        linreg,
        steps=2,
        checkpoint_dir=tmp_path,
        resume=False,
        **TINY,
    )
    assert result.steps == 2 and len(result.losses) == 2


def test_conjugate_families_record_the_exact_kl(linreg, make_guide):
    result = fit(_fresh_guide(make_guide, linreg), linreg, steps=10, **TINY)
    assert [step for step, _ in result.kls] == [10]
    assert all(math.isfinite(kl) and kl >= -1e-3 for _, kl in result.kls)


@pytest.mark.parametrize(
    ("tasks", "options", "pattern"),
    [
        ("family", {"objective": "bogus"}, "objective"),
        ("family", {"num_points": (0, 8)}, "num_points"),
        ("family", {"num_points": (16, 8)}, "num_points"),
        ("datasets", {"objective": "forward_kl"}, "latents"),
        ("datasets", {"objective": "mixed"}, "latents"),
        ("model", {}, "PriorPredictiveTasks"),
    ],
    ids=[
        "bogus-objective",
        "zero-points",
        "empty-range",
        "forward-kl-on-data",
        "mixed-on-data",
        "bare-model",
    ],
)
def test_fit_rejects_bad_requests(tasks, options, pattern, linreg, make_guide, simulate):
    _, x, y = simulate(linreg, 2, 16)
    source = {"family": linreg, "datasets": [(x[0], y[0]), (x[1], y[1])], "model": linreg.model}
    with pytest.raises(ValueError, match=pattern):
        fit(make_guide(linreg), source[tasks], steps=1, **{**TINY, **options})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, "steps must be a positive integer, got 0"),
        ({"steps": -1}, "steps must be a positive integer, got -1"),
        ({"steps": 2.5}, "steps must be a positive integer"),
        ({"tasks_per_step": 0}, "tasks_per_step must be a positive integer"),
        ({"checkpoint_every": 0}, "checkpoint_every must be a positive integer"),
        ({"num_points": (8,)}, "num_points must be (lo, hi)"),
        ({"num_points": (2.5, 8)}, "num_points must be (lo, hi), integers"),
        ({"learning_rate": -0.1}, "learning_rate must be a finite number >= 0, got -0.1"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number >= 0"),
        ({"clip_norm": 0.0}, "clip_norm must be a positive finite number"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"max_passes": 0}, "max_passes must be a positive integer"),
        ({"num_samples": 0}, "num_samples must be a positive integer"),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_fit_refuses_bad_options_before_any_work(options, message, linreg, make_guide, tmp_path):
    guide = make_guide(linreg)
    options = {**TINY, "steps": 2, "checkpoint_dir": tmp_path / "run", **options}
    with pytest.raises(ValueError) as error:
        fit(guide, linreg, **options)
    assert message in str(error.value)
    assert guide.refiner is None and not (tmp_path / "run").exists()


def test_fit_on_real_datasets(linreg, make_guide, simulate):
    _, x, y = simulate(linreg, 3, 40)
    datasets = [(x[0], y[0]), (x[1, :12], y[1, :12]), (x[2], y[2])]
    result = fit(_fresh_guide(make_guide, linreg), datasets, steps=3, **TINY)
    assert result.steps == 3 and all(math.isfinite(loss) for loss in result.losses)
    assert result.kls == []  # real data: no exact reference


def test_dataset_collection_draws_from_the_datasets(linreg, simulate):
    _, x, y = simulate(linreg, 2, 10)
    source = DatasetCollection([(x[0], y[0]), (x[1, :6], y[1, :6])])
    batch = source.sample(5, 20, torch.Generator().manual_seed(0))
    xs, ys = batch.args
    assert batch.theta is None
    assert xs.shape[0] == 5 and xs.shape[1] <= 10 and ys.shape == xs.shape[:2]
    rows = {tuple(row.tolist()) for row in x.reshape(-1, 2)}
    assert all(tuple(row.tolist()) in rows for row in xs.reshape(-1, 2))


@pytest.mark.parametrize(
    "datasets",
    [[], [(torch.zeros(3, 2), torch.zeros(4))], [(torch.zeros(0, 2), torch.zeros(0))]],
    ids=["empty", "mismatched", "zero-length"],
)
def test_dataset_collection_rejects_bad_datasets(datasets):
    with pytest.raises(ValueError, match="dataset"):
        DatasetCollection(datasets)


def test_as_task_source(linreg):
    assert isinstance(as_task_source(linreg), FamilyTasks)
    source = FamilyTasks(linreg)
    assert as_task_source(source) is source
    with pytest.raises(ValueError, match="cannot draw tasks"):
        as_task_source(42)


# ------------------------------------------------------- a user's Pyro model
def batched_regression(x, y=None):
    """A user's batched linear regression: ``x`` is ``(T, N, d)``."""
    num_tasks, num_points, dim = x.shape
    with pyro.plate("tasks", num_tasks, dim=-2):
        w = pyro.sample("w", dist.Normal(torch.zeros(dim), 1.0).to_event(1))
        with pyro.plate("data", num_points, dim=-1):
            return pyro.sample("y", dist.Normal((x * w).sum(-1), 0.5), obs=y)


def covariates(num_tasks, num_points, generator):
    return (torch.randn(num_tasks, num_points, 2, generator=generator),)


@pytest.mark.parametrize(("num_tasks", "num_points"), [(4, 7), (3, 3)])
def test_prior_predictive_tasks_sample_the_globals(num_tasks, num_points):
    source = PriorPredictiveTasks(batched_regression, covariates)
    batch = source.sample(num_tasks, num_points, torch.Generator().manual_seed(0))
    x, y = batch.args
    assert x.shape == (num_tasks, num_points, 2) and y.shape == (num_tasks, num_points)
    assert set(batch.theta) == {"w"}
    assert batch.theta["w"].shape == (num_tasks, 2)
    # y was drawn given those latents: the residuals have the noise scale
    residual = y - (x * batch.theta["w"].unsqueeze(1)).sum(-1)
    assert residual.abs().max() < 0.5 * 5
    again = source.sample(num_tasks, num_points, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.args[1], y)


def test_prior_predictive_tasks_name_a_missing_observed_site():
    source = PriorPredictiveTasks(batched_regression, covariates, observed="obs")
    with pytest.raises(ValueError, match="'obs'"):
        source.sample(2, 4, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("objective", ["forward_kl", "reverse_kl"])
def test_fit_a_plain_pyro_model_from_its_prior_predictive(objective, make_guide):
    torch.manual_seed(0)
    guide = make_guide(batched_regression)
    source = PriorPredictiveTasks(batched_regression, covariates)
    result = fit(guide, source, steps=4, objective=objective, **TINY)
    assert result.steps == 4 and all(math.isfinite(loss) for loss in result.losses)
    assert guide.family is None and guide.layout_signature == [["w", [2]]]
    x = torch.randn(3, 16, 2)
    y = batched_regression(x)
    assert guide.posterior(x, y).batch_shape == (3,)


def test_fit_low_rank_with_the_default_rank(linreg, make_guide):
    guide = _fresh_guide(make_guide, linreg, family="low_rank")
    fit(guide, linreg, steps=3, **TINY)
    assert all(torch.isfinite(value).all() for value in guide.refiner.state_dict().values())


def test_fit_low_rank_below_full_rank(linreg, make_guide):
    guide = _fresh_guide(make_guide, linreg, family="low_rank", rank=1)
    result = fit(guide, linreg, steps=3, **TINY)
    assert all(math.isfinite(loss) for loss in result.losses)
    assert all(torch.isfinite(value).all() for value in guide.refiner.state_dict().values())


def test_fit_builds_an_unbuilt_guide(linreg):
    guide = IterativeAmortizedGuide(
        linreg,
        encoder="set_transformer",
        encoder_options={"embed_dim": 8, "hidden_dim": 8, "num_heads": 2, "num_inducing": 4},
    )
    assert guide.refiner is None
    fit(guide, linreg, steps=1, **TINY)
    assert guide.latent_dim == 2 and guide.refiner.feature_dim == 3
