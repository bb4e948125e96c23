"""Guide checkpoints: round trips, refusal of other models, corrupt or unknown files."""

from __future__ import annotations

import json

import pyro
import pyro.distributions as dist
import pytest
import torch

from iai_prob.checkpoint_format import SCHEMA_VERSION, write_card
from iai_prob.inference import CheckpointError, IterativeAmortizedGuide
from iai_prob.inference.checkpoint import read_checkpoint, write_checkpoint
from iai_prob.models import LinearRegression, LogisticRegression


@pytest.fixture
def saved(linreg, make_guide, simulate, tmp_path):
    """A built guide with perturbed (non-initial) weights, saved as ``tmp_path/guide``."""
    guide = make_guide(linreg, family="diagonal", batch_size=8, seed=4)
    _, x, y = simulate(linreg, 3, 20)
    guide(x, y)
    with torch.no_grad():
        for parameter in guide.refiner.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    guide.save(tmp_path / "guide", quality={"kl": 0.5})
    return guide, tmp_path / "guide", x, y


@pytest.mark.parametrize("suffix", ["", ".safetensors", ".json"])
def test_round_trip_gives_identical_posteriors(saved, linreg, suffix):
    guide, path, x, y = saved
    loaded = IterativeAmortizedGuide.load(f"{path}{suffix}", linreg)
    loaded.convergence = guide.convergence  # a setting of the caller, not in the card
    assert loaded.config == guide.config
    assert loaded.layout_signature == [["w", [2]]]
    assert loaded.card["quality"] == {"kl": 0.5}
    for name, value in guide.refiner.state_dict().items():
        assert torch.equal(loaded.refiner.state_dict()[name], value), name
    for args in [(x, y), (x[0], y[0])]:
        expected, found = guide.posterior(*args), loaded.posterior(*args)
        torch.testing.assert_close(found.mean, expected.mean, rtol=0, atol=0)
        torch.testing.assert_close(found.variance, expected.variance, rtol=0, atol=0)


@pytest.mark.parametrize(
    "other",
    [
        LinearRegression(dim=3, noise_scale=0.5),
        LinearRegression(dim=2, noise_scale=0.7),
        LogisticRegression(dim=2),
    ],
    ids=["other-dim", "other-noise", "other-family"],
)
def test_loading_for_another_model_is_refused(saved, other):
    _, path, _, _ = saved
    with pytest.raises(CheckpointError, match="trained for model"):
        IterativeAmortizedGuide.load(path, other)


def _flip_a_weight_byte(stem):
    weights = stem.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))


def _edit_card(**changes):
    def edit(stem):
        card_path = stem.with_suffix(".json")
        card = json.loads(card_path.read_text())
        card.update(changes)
        card_path.write_text(json.dumps(card))

    return edit


def _resign_card(**changes):
    """Edit the card and recompute its hashes, as someone rewriting both files could."""

    def edit(stem):
        card = json.loads(stem.with_suffix(".json").read_text())
        write_card(stem, {**card, **changes})

    return edit


CORRUPTIONS = {
    "flipped-byte": (_flip_a_weight_byte, "does not match the hash"),
    "unknown-schema": (_edit_card(schema_version=99), "schema version 99"),
    "not-a-card": (_edit_card(format="something-else"), "not an iai_prob checkpoint"),
    "edited-card": (_edit_card(latent_dim=3), "does not match its card_sha256"),
    "training-state": (_resign_card(kind="training"), "not an IterativeAmortizedGuide"),
    "bad-json": (lambda stem: stem.with_suffix(".json").write_text("{oops"), "not valid JSON"),
    "no-weights": (lambda stem: stem.with_suffix(".safetensors").unlink(), "does not exist"),
    "no-card": (lambda stem: stem.with_suffix(".json").unlink(), "does not exist"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_checkpoints_are_refused(saved, linreg, corruption):
    _, path, _, _ = saved
    corrupt, pattern = CORRUPTIONS[corruption]
    corrupt(path)
    with pytest.raises(CheckpointError, match=pattern):
        IterativeAmortizedGuide.load(path, linreg)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_missing_weights_are_refused(saved, linreg, tmp_path):
    _, path, _, _ = saved
    tensors, card = read_checkpoint(path)
    tensors.pop(next(iter(tensors)))
    write_checkpoint(
        tmp_path / "partial", tensors, {k: v for k, v in card.items() if k != "sha256"}
    )
    with pytest.raises(CheckpointError, match="do not fit the guide"):
        IterativeAmortizedGuide.load(tmp_path / "partial", linreg)


def test_write_and_read_checkpoint_round_trip(tmp_path):
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2])}
    write_checkpoint(tmp_path / "sub" / "ckpt", tensors, {"note": "hello"})
    found, card = read_checkpoint(tmp_path / "sub" / "ckpt")
    assert card["note"] == "hello" and card["schema_version"] == SCHEMA_VERSION
    assert set(found) == {"a", "b"}
    assert all(torch.equal(found[k], tensors[k]) for k in tensors)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["ckpt.json", "ckpt.safetensors"]


def _scale_model(x, y=None):
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Normal(x, scale), obs=y)


def _another_scale_model(x, y=None):
    return _scale_model(x, y)


def test_plain_models_are_identified_by_name(make_guide, tmp_path):
    guide = make_guide(_scale_model)
    x = torch.randn(12)
    y = x + 0.1 * torch.randn(12)
    guide(x, y)
    guide.save(tmp_path / "plain")
    loaded = IterativeAmortizedGuide.load(tmp_path / "plain", _scale_model)
    loaded.convergence = guide.convergence  # a setting of the caller, not in the card
    torch.testing.assert_close(loaded.posterior(x, y).mean, guide.posterior(x, y).mean)
    with pytest.raises(CheckpointError, match="_another_scale_model"):
        IterativeAmortizedGuide.load(tmp_path / "plain", _another_scale_model)


def test_an_unbuilt_guide_cannot_be_saved(linreg, make_guide, tmp_path):
    with pytest.raises(RuntimeError, match="has not seen the model"):
        make_guide(linreg).save(tmp_path / "nothing")
