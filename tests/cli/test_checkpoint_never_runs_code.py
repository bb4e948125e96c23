"""A checkpoint never runs code: `iai infer` / `iai diagnose` import a model only from
`--model`, never from a card's `entrypoint`, and every size a card names is checked
against the weights before anything is allocated (issue 16, item 1)."""

from __future__ import annotations

import json
import resource
import shutil
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from iai_prob import pretrained
from iai_prob.checkpoint_format import CheckpointError, card_sha256, read_card, write_card
from iai_prob.cli import main
from iai_prob.inference import IterativeAmortizedGuide
from iai_prob.inference.guide import load_family_guide

USER_MODEL = textwrap.dedent(
    """
    import pyro
    import pyro.distributions as dist


    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with pyro.plate("data", x.shape[-2]):
            return pyro.sample("y", dist.Normal((x * w).sum(-1), 0.5), obs=y)
    """
)
EVIL = 'open({marker!r}, "w").write("ran")\n\ndef model(x, y=None):\n    pass\n'


@pytest.fixture
def user_run(tmp_path, monkeypatch):
    """A guide of a user's model saved as ``run/guide`` with a card whose entrypoint names
    ``evil.py`` (which would create ``pwned`` if imported), and a data file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user_model.py").write_text(USER_MODEL)
    marker = tmp_path / "pwned"
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(marker)))
    namespace: dict = {}
    exec(compile(USER_MODEL, "user_model.py", "exec"), namespace)  # the test's own model
    guide = IterativeAmortizedGuide(
        namespace["model"], family="diagonal", encoder="deep_sets", batch_size=8
    )
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([1.0, -1.0]) + 0.5 * torch.randn(20)
    guide(x, y)
    guide.save(tmp_path / "run" / "guide", entrypoint=f"{tmp_path / 'evil.py'}:model")
    frame = pd.DataFrame(np.c_[x.numpy(), y.numpy()], columns=["x0", "x1", "y"])
    frame.to_csv(tmp_path / "data.csv", index=False)
    return tmp_path, marker


def _argv(command, folder, *extra):
    out = folder / ("o.nc" if command == "infer" else "o.html")
    return [command, str(folder / "run"), str(folder / "data.csv"), "--x", "x0", "x1",
            "--y", "y", "--out", str(out), "--no-progress", *extra]  # fmt: skip


@pytest.mark.parametrize("command", ["infer", "diagnose"])
def test_a_cards_entrypoint_is_never_imported(capsys, user_run, command):
    folder, marker = user_run
    assert main(_argv(command, folder)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "pass --model module:function" in err and "evil.py:model" in err
    assert not marker.exists()


def test_a_tampered_entrypoint_with_a_wrong_hash_is_refused_before_anything(capsys, user_run):
    folder, marker = user_run
    card_path = folder / "run" / "guide.json"
    card = json.loads(card_path.read_text())
    card["entrypoint"] = f"{folder / 'evil.py'}:model"
    card["model"] = {"family": "linear_regression", "config": {"dim": 2}}
    card_path.write_text(json.dumps(card))  # no hash recomputed
    assert main(_argv("infer", folder)) == 2
    assert "does not match its card_sha256" in capsys.readouterr().err
    assert not marker.exists()


def test_the_model_named_on_the_command_line_is_used(capsys, user_run):
    folder, marker = user_run
    assert main(_argv("infer", folder, "--model", "user_model.py:model")) == 0
    assert (folder / "o.nc").exists() and not marker.exists()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    "changes",
    [
        {"model": {"family": "linear_regression", "config": {"dim": 10**9}}},
        {"latent_dim": 200_000, "layout": [["w", [200_000]]]},
        {"feature_dim": 10**9},
        {"guide_options": {"encoder_options": {"hidden_dim": 10**6}}},
        {  # family, layout and latent_dim agree: the meta-device sizes overflow
            "model": {
                "family": "linear_regression",
                "config": {"dim": 10**9, "noise_scale": 0.5, "prior_scale": 1.0},
            },
            "latent_dim": 10**9,
            "layout": [["w", [10**9]]],
        },
    ],
    ids=["family-dim", "latent-dim", "feature-dim", "encoder-width", "all-agree-huge"],
)
def test_sizes_in_a_rehashed_card_are_checked_before_allocation(tmp_path, changes):
    source = tmp_path / "guide"
    shutil.copy(pretrained._folder() / "linear_regression.safetensors", f"{source}.safetensors")
    _, card = read_card(pretrained._folder() / "linear_regression")
    if "guide_options" in changes:
        card["guide"] = {**card["guide"], **changes.pop("guide_options")}
    card.update(changes)
    write_card(source, card)  # both hashes recomputed: only the schema checks stand
    assert read_card(source)[1]["card_sha256"] == card_sha256(read_card(source)[1])
    before = _peak_rss_mib()
    with pytest.raises(CheckpointError, match=r"layout|do not fit the guide|invalid guide config"):
        load_family_guide(source)
    assert _peak_rss_mib() - before < 200  # a dim of 10⁹ would take 4 GB
