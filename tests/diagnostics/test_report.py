"""The HTML report: self-contained, every section drawn, findings measured."""

import re

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
    assert len(result.notes) == 4


def test_report_for_a_batch(guide, tmp_path):
    _, x, y = guide.family.sample(6, 50, generator=torch.Generator().manual_seed(3))
    result = report(
        guide,
        x,
        y,
        path=tmp_path / "batch.html",
        num_samples=200,
        sbc_datasets=0,
        progress=False,
    )
    assert len(result.findings["khat"]) == 6
    assert "PSIS-LOO" not in result.path.read_text()
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
