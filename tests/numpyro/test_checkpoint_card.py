"""The JAX guide checks a checkpoint's card like the PyTorch guide (issue 16, item 1):
sizes a card names are compared with the weights' header (``eqx.filter_eval_shape``,
nothing allocated) before anything is built, and the shipped guides load unchanged."""

from __future__ import annotations

import shutil

import pytest

from iai_prob import pretrained as shipped
from iai_prob.checkpoint_format import CheckpointError, read_card, write_card
from iai_prob.models import LinearRegression
from iai_prob.numpyro import pretrained
from iai_prob.numpyro.guide import load_guide

BIG = {"dim": 10**9, "noise_scale": 0.5, "prior_scale": 1.0}


def _tampered(tmp_path, **changes):
    """The shipped linear_regression checkpoint with its card edited and re-hashed."""
    source = shipped._folder() / "linear_regression"
    shutil.copy(f"{source}.safetensors", tmp_path / "guide.safetensors")
    _, card = read_card(source)
    if "guide_options" in changes:
        card["guide"] = {**card["guide"], **changes.pop("guide_options")}
    write_card(tmp_path / "guide", {**card, **changes})
    return tmp_path / "guide"


@pytest.mark.parametrize(
    ("changes", "family", "pattern"),
    [
        ({"model": {"family": "linear_regression", "config": BIG}}, 10**9, "layout"),
        ({"latent_dim": 200_000, "layout": [["w", [200_000]]]}, 8, "layout"),
        ({"feature_dim": 10**9}, 8, "do not fit the guide"),
        ({"guide_options": {"encoder_options": {"hidden_dim": 10**6}}}, 8, "do not fit"),
        ({"guide_options": {"num_particles": 10**9}}, 8, "num_particles"),
        ({"guide_options": {"seed": "x"}}, 8, "seed must be a non-negative integer"),
        ({"guide_options": {"seed": 10**30}}, 8, "seed must be a non-negative integer"),
        ({"guide_options": {"encoder_options": {"foo": 1}}}, 8, "invalid guide config"),
    ],
    ids=[
        "family-dim",
        "latent-dim",
        "feature-dim",
        "encoder-width",
        "particles",
        "seed-string",
        "seed-huge",
        "unknown-encoder-option",
    ],
)
def test_sizes_in_a_rehashed_card_are_refused_before_building(tmp_path, changes, family, pattern):
    path = _tampered(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=pattern):
        load_guide(path, LinearRegression(dim=family).on("numpyro"))


def test_the_shipped_guides_load(tmp_path):
    for name in pretrained.available():
        guide, params = pretrained.load(name)
        assert guide.card["card_sha256"] == read_card(shipped._folder() / name)[1]["card_sha256"]
        assert params


def test_weights_holding_nan_are_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    path = _tampered(tmp_path)
    arrays = load_file(f"{path}.safetensors")
    name = sorted(arrays)[0]
    arrays[name] = arrays[name] * float("nan")
    save_file(arrays, f"{path}.safetensors")
    _, card = read_card(shipped._folder() / "linear_regression")
    write_card(path, card)  # re-hashed: only the content check stands
    with pytest.raises(CheckpointError, match="hold NaN or inf values"):
        load_guide(path, LinearRegression(dim=8).on("numpyro"))
