"""Safe checkpoints: nothing runs code on load, tampered files are refused, and versioned
(training) checkpoints are always a consistent pair even when a write is interrupted."""

from __future__ import annotations

import builtins
import hashlib
import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from iai_prob import checkpoint_format
from iai_prob.inference import CheckpointError, IterativeAmortizedGuide, fit
from iai_prob.inference.checkpoint import read_checkpoint, write_checkpoint


@pytest.fixture
def saved(linreg, make_guide, simulate, tmp_path):
    guide = make_guide(linreg, family="diagonal", batch_size=8)
    _, x, y = simulate(linreg, 1, 16)
    guide(x[0], y[0])
    guide.save(tmp_path / "guide")
    return tmp_path / "guide"


def _rewrite_card(stem, *, drop=(), **changes):
    """An attacker's edit: change the card and recompute both hashes so that they match."""
    card = json.loads(stem.with_suffix(".json").read_text())
    weights = stem.parent / card.get("weights_file", stem.name + ".safetensors")
    card.update(changes)
    for key in drop:
        del card[key]
    card["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    card["card_sha256"] = checkpoint_format.card_sha256(card)
    stem.with_suffix(".json").write_text(json.dumps(card))


class _Payload:
    """Pickled, this would create ``marker`` when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _forbid_code_paths(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load reached pickle / torch.load / eval / exec")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)


def test_loading_a_guide_and_resuming_training_never_unpickle(
    monkeypatch, saved, linreg, make_guide, tmp_path
):
    torch.manual_seed(0)
    options = {"tasks_per_step": 2, "num_points": (8, 12), "progress": False}
    fit(make_guide(linreg), linreg, steps=1, checkpoint_dir=tmp_path / "run", **options)
    _forbid_code_paths(monkeypatch)
    guide = IterativeAmortizedGuide.load(saved, linreg)
    assert guide.refiner is not None
    torch.manual_seed(0)
    result = fit(make_guide(linreg), linreg, steps=2, checkpoint_dir=tmp_path / "run", **options)
    assert result.steps == 2 and len(result.losses) == 2  # resumed from step 1


def test_a_pickle_disguised_as_weights_is_refused_without_running(saved, linreg, tmp_path):
    marker = tmp_path / "pwned"
    weights = saved.with_suffix(".safetensors")
    weights.write_bytes(pickle.dumps(_Payload(marker)))
    _rewrite_card(saved)  # even with a matching hash
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        IterativeAmortizedGuide.load(saved, linreg)
    assert not marker.exists()


TAMPERED_CARDS = {
    "latent-dim": ({"latent_dim": 5}, "has 2 latent scalars but its latent_dim is 5"),
    "latent-dim-and-layout": (
        {"latent_dim": 200_000, "layout": [["w", [200_000]]]},
        r"latent layout \[\['w', \[2\]\]\], the card \[\['w', \[200000\]\]\]",
    ),
    "feature-dim": ({"feature_dim": 9}, "do not fit the guide"),
    "feature-dim-huge": ({"feature_dim": 10**9}, "do not fit the guide"),
    "unknown-guide-option": ({"guide": {"bogus": 1}}, r"guide options \['bogus'\] are unknown"),
    "bad-guide-option": ({"guide": {"family": "bogus"}}, "invalid guide config"),
    "float-size": ({"guide": {"batch_size": 64.5}}, "batch_size must be a non-negative integer"),
    "too-many-particles": ({"guide": {"num_particles": 10**9}}, "num_particles"),
    "layout-not-a-list": ({"layout": "w"}, "list of \\[site name, shape\\]"),
    "model-with-extra-keys": (
        {"model": {"callable": "f", "import": "evil:f"}},
        r"must be \{family, config\} or \{callable\}",
    ),
    "entrypoint-not-a-string": ({"entrypoint": ["evil.py"]}, "entrypoint must be a string"),
    "seed-not-an-int": ({"guide": {"seed": "x"}}, "seed must be a non-negative integer"),
    "seed-beyond-int64": ({"guide": {"seed": 10**30}}, "seed must be a non-negative integer"),
    "weights-outside-the-folder": ({"weights_file": "../x.safetensors"}, "weights_file"),
    "standardize-not-a-bool": ({"guide": {"standardize": "yes"}}, "standardize must be true or"),
    "no-layout": ({"layout": None}, None),
}


@pytest.mark.parametrize("row", sorted(TAMPERED_CARDS))
def test_tampered_cards_are_refused(row, saved, linreg):
    changes, pattern = TAMPERED_CARDS[row]
    if row == "no-layout":
        _rewrite_card(saved, drop=["layout"])
        pattern = r"lacks \['layout'\]"
    else:
        _rewrite_card(saved, **changes)
    with pytest.raises(CheckpointError, match=pattern):
        IterativeAmortizedGuide.load(saved, linreg)


def test_a_standardized_guide_relabelled_as_not_is_refused(saved, linreg):
    """The prior's location and scale are weights of a standardized guide: a card that
    says otherwise does not fit them (the start would silently change)."""
    guide = json.loads(saved.with_suffix(".json").read_text())["guide"]
    assert guide["standardize"] is True
    _rewrite_card(saved, guide={**guide, "standardize": False})
    with pytest.raises(CheckpointError, match="prior_loc"):
        IterativeAmortizedGuide.load(saved, linreg)


def test_weights_of_the_wrong_shape_are_refused(saved, linreg):
    tensors, _ = read_checkpoint(saved)
    name = next(iter(tensors))
    tensors[name] = torch.zeros(*tensors[name].shape, 2)
    save_file(tensors, str(saved.with_suffix(".safetensors")))
    _rewrite_card(saved)
    with pytest.raises(CheckpointError, match="do not fit the guide"):
        IterativeAmortizedGuide.load(saved, linreg)


@pytest.mark.parametrize("version", [0, 3, "1", None, True])
def test_unknown_schema_versions_are_refused(version, saved, linreg):
    _rewrite_card(saved, schema_version=version)
    with pytest.raises(CheckpointError, match="schema version"):
        IterativeAmortizedGuide.load(saved, linreg)


def test_an_interrupted_versioned_write_keeps_the_previous_checkpoint(monkeypatch, tmp_path):
    stem = tmp_path / "last"
    write_checkpoint(stem, {"a": torch.zeros(3)}, {"step": 1}, versioned=True)
    write_checkpoint(stem, {"a": torch.ones(3)}, {"step": 2}, versioned=True)
    original = checkpoint_format.atomic_write

    def die_at_the_card(path, write):  # a crash after the weights, before the card
        if path.suffix == ".json":
            raise KeyboardInterrupt("killed")
        original(path, write)

    monkeypatch.setattr(checkpoint_format, "atomic_write", die_at_the_card)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(stem, {"a": torch.full((3,), 7.0)}, {"step": 3}, versioned=True)
    monkeypatch.undo()
    tensors, card = read_checkpoint(stem)
    assert card["step"] == 2 and torch.equal(tensors["a"], torch.ones(3))
    # the next successful write commits and removes every superseded weights file
    write_checkpoint(stem, {"a": torch.full((3,), 8.0)}, {"step": 4}, versioned=True)
    tensors, card = read_checkpoint(stem)
    assert card["step"] == 4 and torch.equal(tensors["a"], torch.full((3,), 8.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.json", card["weights_file"]])


def test_a_5000_digit_integer_in_a_card_is_refused_by_name(saved, linreg):
    card_path = saved.with_suffix(".json")
    card_path.write_text(
        card_path.read_text().replace('"latent_dim": 2', '"latent_dim": ' + "9" * 5000)
    )
    with pytest.raises(CheckpointError, match=r"guide.json is not valid JSON: Exceeds the limit"):
        IterativeAmortizedGuide.load(saved, linreg)


def test_weights_behind_a_link_out_of_the_folder_are_refused(saved, linreg, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "w.safetensors"
    saved.with_suffix(".safetensors").rename(target)
    saved.with_suffix(".safetensors").symlink_to(target)
    with pytest.raises(CheckpointError, match="leads outside the folder of its card"):
        IterativeAmortizedGuide.load(saved, linreg)


@pytest.mark.parametrize("poison", ["nan", "int8"])
def test_weights_that_are_not_finite_floats_are_refused(poison, saved, linreg):
    tensors, _ = read_checkpoint(saved)
    name = sorted(tensors)[0]
    if poison == "nan":
        tensors[name] = torch.full_like(tensors[name], float("nan"))
    else:
        tensors[name] = tensors[name].to(torch.int8)
    save_file(tensors, str(saved.with_suffix(".safetensors")))
    _rewrite_card(saved)  # the hash matches the poisoned weights
    pattern = "hold NaN or inf values" if poison == "nan" else "is stored as I8"
    with pytest.raises(CheckpointError, match=pattern):
        IterativeAmortizedGuide.load(saved, linreg)
