"""Smoke tests: the example scripts and ``iai demo`` run end to end with tiny arguments."""

import importlib.util
import sys
from pathlib import Path

import pytest

from iai_prob import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_linear_regression_example(capsys):
    _load("linear_regression").main(
        [
            "--dim",
            "2",
            "--steps",
            "3",
            "--tasks",
            "4",
            "--num-points",
            "64",
            "--svi-tasks",
            "1",
            "--svi-steps",
            "20",
            "--batch-size",
            "16",
        ]
    )
    out = capsys.readouterr().out
    assert "refinement step" in out and "Pyro SVI" in out
    kls = [
        float(line.split()[1])
        for line in out.splitlines()
        if line.strip()[:1].isdigit() and len(line.split()) == 2
    ]
    assert len(kls) == 64 // 16 + 1 and all(kl >= 0 for kl in kls)


def test_custom_model_example():
    median = _load("custom_model").main(["--steps", "30", "--num-points", "2000"])
    assert set(median) == {"w", "sigma"} and median["w"].shape == (3,)
    assert abs(float(median["sigma"]) - 0.3) < 0.05  # sigma is pinned down by 2,000 points


def test_grouped_csv_example(tmp_path):
    result, kls = _load("grouped_csv").main(
        ["--groups", "40", "--loop-groups", "3", "--out", str(tmp_path)]
    )
    assert len(result.keys) == 40 and result.batched
    assert sorted(kls)[len(kls) // 2] < 0.1  # median KL to the exact posteriors, nats


def test_streaming_parquet_example(tmp_path):
    kl = _load("streaming_parquet").main(
        ["--rows", "3000", "--chunk-rows", "1000", "--out", str(tmp_path)]
    )
    assert 0 <= kl < 0.2


@pytest.mark.slow
def test_iai_demo(capsys):
    assert cli.main(["demo", "--svi-steps", "5"]) == 0
    out = capsys.readouterr().out
    kl = float(out.split("KL(q || exact posterior) = ")[1].split()[0])
    assert kl < 0.2  # the shipped guide on the shipped 2,000-row dataset
    median = float(out.split("KL(q || exact) per school: median ")[1].split(",")[0])
    assert median < 0.1 and "120 schools of 8 to 48 rows" in out
