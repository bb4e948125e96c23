"""ImplicitPredictor: shapes, refinement, training by fit, checkpoints, errors."""

from __future__ import annotations

import pytest
import torch

from iai_prob.inference import CheckpointError, ImplicitPredictor, fit
from iai_prob.inference.checkpoint import write_checkpoint
from iai_prob.models import LinearRegression


def _split(family, seed, num_tasks=16, num_points=64):
    _, x, y = family.sample(num_tasks, num_points, generator=torch.Generator().manual_seed(seed))
    half = num_points // 2
    return x[:, :half], y[:, :half], x[:, half:], y[:, half:]


def _nll(predictor, state, y):
    return float(predictor.negative_log_likelihood(state, y).mean())


@pytest.mark.parametrize(
    ("likelihood", "state_dim"), [("gaussian", 2), ("bernoulli", 1), ("categorical", 3)]
)
def test_shapes_and_an_untrained_predictor_keeps_its_state(likelihood, state_dim):
    predictor = ImplicitPredictor(2, likelihood=likelihood, num_classes=3, batch_size=4)
    x, xq = torch.randn(3, 10, 2), torch.randn(3, 5, 2)
    y = torch.randint(0, 2 if likelihood != "gaussian" else 3, (3, 10))
    states = list(predictor.trajectory(x, y.float() if likelihood != "categorical" else y, xq))
    assert len(states) == 1 + 3  # λ_0 and ⌈10/4⌉ steps
    assert all(s.shape == (3, 5, state_dim) for s in states)
    torch.testing.assert_close(states[-1], states[0])  # zero-initialized residual head
    single = predictor.predict(x[0], y[0].float() if likelihood != "categorical" else y[0], xq[0])
    assert single.shape == (5, state_dim)


def test_bad_inputs_are_named():
    predictor = ImplicitPredictor(2, likelihood="categorical", num_classes=3)
    x, xq = torch.randn(2, 6, 2), torch.randn(2, 3, 2)
    with pytest.raises(ValueError, match="expected x of shape"):
        list(predictor.trajectory(torch.randn(2, 6, 5), torch.zeros(2, 6), xq))
    with pytest.raises(ValueError, match="does not match"):
        list(predictor.trajectory(x, torch.zeros(2, 5), xq))
    with pytest.raises(ValueError, match="labels y must lie"):
        list(predictor.trajectory(x, torch.full((2, 6), 3), xq))
    with pytest.raises(ValueError, match="tasks"):
        list(predictor.trajectory(x, torch.zeros(2, 6, dtype=torch.long), xq[:1]))
    with pytest.raises(ValueError, match="likelihood"):
        ImplicitPredictor(2, likelihood="poisson")
    with pytest.raises(ValueError, match="batch_size"):
        ImplicitPredictor(2, batch_size=0)
    with pytest.raises(ValueError, match="objective"):
        fit(predictor, LinearRegression(dim=2), steps=1, objective="forward_kl", progress=False)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    family = LinearRegression(dim=2, noise_scale=0.5)
    predictor = ImplicitPredictor(2, hidden_dim=16, batch_size=16)
    before = _split(family, seed=5)
    untrained = _nll(predictor, predictor.predict(*before[:3]), before[3])
    result = fit(
        predictor,
        family,
        steps=60,
        tasks_per_step=16,
        num_points=(32, 64),
        learning_rate=3e-3,
        progress=False,
    )
    return family, predictor, untrained, result


def test_fit_lowers_the_held_out_query_nll(trained):
    family, predictor, untrained, result = trained
    x, y, xq, yq = _split(family, seed=5)
    after = _nll(predictor, predictor.predict(x, y, xq), yq)
    assert after < untrained - 0.3, (untrained, after)
    assert len(result.losses) == 60 and not predictor.training


def test_refinement_steps_lower_the_query_nll(trained):
    family, predictor, *_ = trained
    x, y, xq, yq = _split(family, seed=6)
    with torch.no_grad():
        nlls = [_nll(predictor, s, yq) for s in predictor.trajectory(x, y, xq, batch_size=8)]
    assert nlls[-1] < nlls[1] < nlls[0], nlls


def test_checkpoint_round_trip_and_refusals(trained, tmp_path):
    family, predictor, *_ = trained
    predictor.save(tmp_path / "implicit", quality={"nll": 1.0})
    loaded = ImplicitPredictor.load(tmp_path / "implicit")
    assert loaded.config == predictor.config and loaded.card["quality"] == {"nll": 1.0}
    x, y, xq, _ = _split(family, seed=7)
    torch.testing.assert_close(loaded.predict(x, y, xq), predictor.predict(x, y, xq))
    write_checkpoint(tmp_path / "other", {}, {"kind": "IterativeAmortizedGuide"})
    with pytest.raises(CheckpointError, match="not an ImplicitPredictor"):
        ImplicitPredictor.load(tmp_path / "other")


def test_fit_resumes_an_implicit_predictor(tmp_path):
    family = LinearRegression(dim=2)
    options = dict(
        tasks_per_step=4,
        num_points=(8, 8),
        progress=False,
        checkpoint_dir=tmp_path,
        checkpoint_every=2,
    )
    first = ImplicitPredictor(2, hidden_dim=8, batch_size=4)
    fit(first, family, steps=2, **options)
    second = ImplicitPredictor(2, hidden_dim=8, batch_size=4)
    result = fit(second, family, steps=2, **options)
    assert result.steps == 2
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key
    assert ImplicitPredictor.load(tmp_path / "guide").config == first.config
