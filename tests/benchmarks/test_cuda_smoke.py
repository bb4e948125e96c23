"""``benchmarks/cuda_smoke.py``: its device code path runs on the CPU here, and without
CUDA it exits 0 with a message."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cuda_smoke.py"


def _main():
    spec = importlib.util.spec_from_file_location("cuda_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_the_device_code_path_runs_on_the_cpu(capsys):
    assert _main()(["--device", "cpu", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "1. fit: 3 steps" in out and "skipped 0" in out
    kl = float(re.search(r"shipped guide: KL\(q \|\| exact\) = (\S+)", out).group(1))
    assert 0.0 <= kl < 1.0, out  # the shipped guide is accurate on an in-range dataset
    difference = float(re.search(r"mean\(cpu\)\| = (\S+)", out).group(1))
    assert difference == 0.0  # the same device: the same numbers
    assert re.search(r"^\| 4 \| [0-9.]+ \| [0-9.]+ \|$", out, flags=re.MULTILINE)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present: the script runs")
def test_without_cuda_it_exits_cleanly(capsys):
    assert _main()([]) == 0
    assert "no CUDA device available" in capsys.readouterr().out
