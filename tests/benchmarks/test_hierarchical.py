"""``benchmarks/hierarchical.py``: a quick run prints one row per model, with a NUTS floor
near chance and every cell filled (or the failure said in the row)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "hierarchical.py"


@pytest.mark.slow
@pytest.mark.heavy  # about 100 s on one CI worker (two NUTS chains per model): make test-all
def test_quick_run_prints_a_row_per_model_with_a_floor_near_chance(tmp_path):
    out = tmp_path / "table.md"
    command = [sys.executable, str(SCRIPT), "--quick", "--out", str(out)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == [
        "grunfeld_random_intercepts",
        "test_scores_5_rows",
    ]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        floor = cells[4]
        if floor != "—":  # a failed model says so in its last cells
            mean = float(re.findall(r"[0-9.]+", floor)[0])
            assert 0.4 <= mean <= 0.62, row
