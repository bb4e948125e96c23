"""The HTML report: self-contained, every section drawn, findings measured, names kept,
truncation said, and a verdict on the model's fit as well as the guide's."""

import json
import re

import numpy as np
import pytest
import torch

from iai_prob import pretrained
from iai_prob.datasets import load_linear_regression_demo
from iai_prob.diagnostics import report


@pytest.fixture(scope="module")
def guide():
    return pretrained.load("linear_regression")


def test_report_for_one_dataset(guide, tmp_path):
    x, y, _ = load_linear_regression_demo()
    result = report(
        guide,
        x[:300],
        y[:300],
        path=tmp_path / "one.html",
        num_samples=200,
        sbc_datasets=40,
        sbc_points=32,
        progress=False,
    )
    text = result.path.read_text()
    for section in (
        "Importance weights",
        "Posterior",
        "PSIS-LOO",
        "Refinement",
        "Simulation-based calibration",
        "What the diagnostics say",
    ):
        assert section in text
    images = re.findall(r'<img src="([^"]+)"', text)
    assert len(images) >= 9
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "http" not in text.replace("http-equiv", "")
    findings = result.findings
    assert findings["khat"] < 0.7
    assert findings["exact_kl"][1] < findings["exact_kl"][0]
    assert findings["sbc"]["num_datasets"] == 40
    assert len(result.notes) == 5
    assert set(findings["verdict"]) == {"guide", "posterior_predictive", "loo", "sbc"}
    assert findings["verdict"]["posterior_predictive"] and findings["verdict"]["loo"]
    assert findings["loo"]["p_loo"] <= 2 * 8
    json.dumps(findings)  # JSON-friendly, as documented


def test_report_for_a_batch(guide, tmp_path):
    _, x, y = guide.family.sample(6, 50, generator=torch.Generator().manual_seed(3))
    y[4] *= 10  # one dataset the model (noise sd 0.5 fixed) cannot describe
    names = [f"school_{i}" for i in range(6)]
    result = report(
        guide,
        x,
        y,
        path=tmp_path / "batch.html",
        num_samples=200,
        sbc_datasets=0,
        progress=False,
        group_names=names,
        column_names=[[f"c{i}" for i in range(8)], None],
        description="6 of 30 groups",
    )
    findings = result.findings
    assert len(findings["khat"]) == 6 and findings["datasets"] == names
    json.dumps(findings)
    text = result.path.read_text()
    # names, not indices, in the posterior table; the columns named in the header
    assert "w[school_0, 0]" in text and "w[0, 0]" not in text
    assert "x: c0, c1, c2, c3, c4, c5, c6, c7" in text and "<p>6 of 30 groups</p>" in text
    # 6 datasets x 8 weights = 48 rows: the table is cut, and says so
    assert "The first 40 of 48 rows" in text and "w[school_5, 7]" not in text.split("<h2>")[3]
    # the model-fit checks find the one misfit dataset and fail the verdict
    assert findings["verdict"] == {"guide": True, "posterior_predictive": False, "loo": False}
    assert "the model does not reproduce school_4." in text
    assert findings["loo"]["p_loo"][4] > 16 > max(np.delete(findings["loo"]["p_loo"], 4))
    assert '<li class="bad">Posterior predictive check: 5 of 6 datasets' in text
    assert "Failed: the posterior predictive check, PSIS-LOO (p_loo)" in text
    with pytest.raises(ValueError, match="one dataset"):
        report(guide, x, y, path=tmp_path / "x.html", nuts=True)


def test_report_with_nuts(tmp_path):
    guide = pretrained.load("logistic_regression")
    _, x, y = guide.family.sample(1, 40, generator=torch.Generator().manual_seed(8))
    result = report(
        guide,
        x[0],
        y[0],
        path=tmp_path / "nuts.html",
        num_samples=60,
        sbc_datasets=0,
        nuts=True,
        nuts_warmup=20,
        progress=False,
    )
    text = result.path.read_text()
    assert "Guide vs NUTS" in text and "sd_ratio" in text
    assert result.findings["nuts"]["nuts_seconds"] > 0
    assert 0 <= result.findings["nuts"]["c2st"] <= 1


def test_report_names_must_fit_the_data(guide, tmp_path):
    _, x, y = guide.family.sample(2, 30, generator=torch.Generator().manual_seed(4))
    options = {"path": tmp_path / "r.html", "num_samples": 50, "sbc_datasets": 0}
    with pytest.raises(ValueError, match="group_names has 3 names for a batch of 2"):
        report(guide, x, y, group_names=["a", "b", "c"], **options)
    with pytest.raises(ValueError, match=r"column_names\[0\] names 2 column\(s\)"):
        report(guide, x, y, column_names=[["a", "b"], None], **options)
    with pytest.raises(ValueError, match="column_names has 1 entries for 2 data arguments"):
        report(guide, x, y, column_names=[None], **options)


def test_report_refines_with_passes(guide, tmp_path):
    x, y, _ = load_linear_regression_demo()
    x, y = x[None, :100], y[None, :100]  # a batch of one: no plots; batch size 64: 2 steps
    options = {"num_samples": 100, "sbc_datasets": 0, "progress": False}
    one = report(guide, x, y, path=tmp_path / "one.html", **options)
    three = report(guide, x, y, path=tmp_path / "three.html", passes=3, **options)
    assert one.findings["refinement_steps"] == 2 and three.findings["refinement_steps"] == 6
    assert three.findings["exact_kl"][1] < one.findings["exact_kl"][1] / 2
    assert "after 3 refinement passes" in three.path.read_text()
    with pytest.raises(ValueError, match="passes must be a positive integer, got 0"):
        report(guide, x, y, path=tmp_path / "zero.html", passes=0, **options)
    posterior = guide.posterior  # a callable posterior has no refinement to repeat
    with pytest.raises(ValueError, match="passes=2 refines a Pyro IterativeAmortizedGuide"):
        report(posterior, x, y, model=guide.model, path=tmp_path / "c.html", passes=2)
