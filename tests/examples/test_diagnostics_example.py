"""Smoke test: ``examples/diagnostics_report.py`` runs end to end with tiny sizes."""

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "diagnostics_report.py"


@pytest.mark.slow
def test_diagnostics_example(tmp_path):
    spec = importlib.util.spec_from_file_location("diagnostics_report", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    findings = module.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "report.html").stat().st_size > 10_000
    saved = json.loads((tmp_path / "findings.json").read_text())
    assert set(saved["khat"]) == {"linear_regression", "logistic_regression", "gaussian_mixture"}
    assert set(saved["sbc"]) == set(saved["khat"])
    assert findings["nuts_logistic"][0]["nuts_seconds"] > 0
