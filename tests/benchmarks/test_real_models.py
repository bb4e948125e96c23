"""``benchmarks/real_models.py``: a quick run of one model prints the suite's table, its
NUTS-vs-NUTS floor is near chance, and a bad ``--models`` is one line.

The run is a subprocess: the suite switches JAX to float64 for the whole process.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "real_models.py"


@pytest.fixture
def script(monkeypatch):
    """The script as a module, with ``benchmarks/`` on the path as when it runs."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("real_models_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text: str, headers) -> list[dict[str, str]]:
    """The rows of the first Markdown table whose header is ``headers``."""
    lines = text.splitlines()
    header = "| " + " | ".join(headers) + " |"
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        assert len(cells) == len(headers), line
        rows.append(dict(zip(headers, cells, strict=True)))
    return rows


@pytest.mark.slow
@pytest.mark.heavy  # 29 s of one CI worker (JAX compiles NUTS and Laplace): `make test-all`
def test_quick_run_prints_the_table_with_a_floor_near_chance(script, tmp_path):
    out = tmp_path / "table.md"
    command = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--models",
        "diabetes_linear",
        "--steps",
        "3",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        "--no-progress",
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    (row,) = _rows(text, script.HEADERS)
    assert row["model"] == "diabetes_linear" and row["N"] == "442" and row["params"] == "5"
    for column in ("guide C2ST", "Laplace C2ST", "C2ST after PSIS"):  # mean [min, max]
        mean, low, high = (float(v) for v in re.findall(r"[-+0-9.]+", row[column]))
        assert 0.0 <= low <= mean <= high <= 1.0, (column, row[column])
    # two NUTS chains of one posterior: a classifier cannot tell them apart
    assert 0.4 <= float(row["NUTS floor C2ST"]) <= 0.62, row["NUTS floor C2ST"]
    # the Laplace approximation of a 442-point linear regression is close to exact
    assert float(row["Laplace C2ST"].split(" [")[0]) <= 0.65, row["Laplace C2ST"]
    low, high = (float(v) for v in row["sd ratio"].split("–"))
    assert 0 < low <= high
    assert row[script.ACCURACY_HEADER] in ("PASS", "MISS")
    for column in ("guide s/dataset", "NUTS s/dataset", "Laplace s/dataset"):
        assert row[column].endswith((" ms", " s")), (column, row[column])
    (costs,) = _rows(text, script.COST_HEADERS)
    assert int(costs["Newton iterations"]) >= 1
    # the trained guide stays in the cache folder, named by model, steps and seed
    assert len(list((tmp_path / "cache").glob("diabetes_linear-*/steps3-seed0/guide.json"))) == 1


def test_an_unknown_model_is_one_line_naming_the_choices(script, capsys):
    with pytest.raises(SystemExit) as raised:
        script.selected_models("diabetes_linear,nope", script.parser())
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown model(s) nope" in error and "grunfeld_firms" in error


def _result(harness, c2st: float, passes, converged) -> object:
    return harness.DatasetResult(
        name="g",
        num_points=20,
        num_params=4,
        c2st_guide=[c2st],
        c2st_floor=[0.5, 0.52],
        c2st_laplace=[0.6],
        c2st_resampled=[0.5],
        c2st_gaussian=[0.51],
        mean_error=0.1,
        sd_ratio=(0.9, 1.1),
        khat=0.3,
        passes=passes,
        converged=converged,
        guide_seconds=0.01,
        nuts_seconds=1.0,
        laplace_seconds=0.001,
        laplace_iterations=5,
    )


def test_a_grouped_row_gives_median_and_range_and_dashes_for_an_unreported_status(script):
    from real_models import harness
    from real_models.models import MODELS

    cells = dict(
        zip(
            script.HEADERS,
            script.row(
                harness.ModelResult(
                    MODELS["grunfeld_firms"],
                    [_result(harness, c, None, None) for c in (0.5, 0.7, 0.52)],
                )
            ),
            strict=True,
        )
    )
    assert cells["N"] == "20 × 3 groups"
    assert cells["guide C2ST"] == "0.52 [0.50, 0.70]"
    assert cells["passes"] == cells["converged"] == "—"
    assert cells["NUTS ÷ guide"] == "100.0×"
    assert cells[script.ACCURACY_HEADER] == "PASS"  # the median over groups
    reported = [_result(harness, 0.6, p, c) for p, c in ((2.0, True), (40.0, False))]
    cells = dict(
        zip(
            script.HEADERS,
            script.row(harness.ModelResult(MODELS["grunfeld_firms"], reported)),
            strict=True,
        )
    )
    assert cells["converged"] == "1/2" and cells["passes"] == "21 [2, 40]"
    assert cells[script.ACCURACY_HEADER] == "MISS"


def test_one_dataset_is_scored_by_its_mean_over_the_reference_chains(script):
    """One reference chain moves a C2ST by about 0.02: the cell gives the mean and range
    over the chains, and the verdict reads the mean."""
    from real_models import harness
    from real_models.models import MODELS

    def cells(scores):
        result = _result(harness, 0.5, 1.0, True)
        result.c2st_guide = scores
        model = harness.ModelResult(MODELS["engel_loglinear"], [result])
        return dict(zip(script.HEADERS, script.row(model), strict=True))

    verdict = script.ACCURACY_HEADER
    passed = cells([0.53, 0.57, 0.52, 0.54])
    assert passed["guide C2ST"] == "0.54 [0.52, 0.57]" and passed[verdict] == "PASS"
    missed = cells([0.55, 0.57, 0.56, 0.54])
    assert missed["guide C2ST"] == "0.56 [0.54, 0.57]" and missed[verdict] == "MISS"
    assert passed["NUTS floor C2ST"] == "0.51 [0.50, 0.52]"


def test_where_no_gaussian_reaches_the_target_the_flag_and_resampling_decide(script):
    """Heavy tails or skew: the moment-matched Gaussian's C2ST is above 0.55, so the
    target asks for k̂ above 0.5 (the guide's notice) and C2ST ≤ 0.6 after PSIS."""
    from real_models import harness
    from real_models.models import MODELS

    def cells(khat, resampled):
        result = _result(harness, 0.57, 1.0, True)
        result.c2st_gaussian, result.khat, result.c2st_resampled = [0.57, 0.58], khat, resampled
        model = harness.ModelResult(MODELS["stackloss_student_t"], [result])
        return dict(zip(script.HEADERS, script.row(model), strict=True))

    passed = cells(0.54, [0.53, 0.55])
    assert passed["moment-matched Gaussian C2ST"] == "0.57 [0.57, 0.58]"
    assert passed[script.ACCURACY_HEADER].startswith("PASS (no Gaussian reaches 0.55")
    assert cells(0.45, [0.53])[script.ACCURACY_HEADER].startswith("MISS")  # not flagged
    assert cells(0.54, [0.62])[script.ACCURACY_HEADER].startswith("MISS")  # not repaired


def test_a_grouped_model_is_timed_one_group_at_a_time_and_in_one_call(script):
    """The speed verdict of a model of groups reads the grouped call (``iai infer
    --group``), and the row shows both times."""
    from real_models import harness
    from real_models.models import MODELS

    groups = [_result(harness, 0.5, None, None) for _ in range(3)]  # 10 ms, NUTS 1 s

    def cells(grouped_seconds):
        result = harness.ModelResult(MODELS["grunfeld_firms"], groups)
        result.grouped_seconds = grouped_seconds
        return dict(zip(script.HEADERS, script.row(result), strict=True))

    speed = f"≥ {script.SPEED_TARGET}× NUTS"
    fast = cells(0.002)
    assert fast["guide s/dataset"] == "10 ms (2 ms in one call)"
    assert fast["NUTS ÷ guide"] == "100.0× (500× in one call)" and fast[speed] == "PASS"
    slow = cells(0.1)  # slower in one call than one at a time: the call decides
    assert slow["NUTS ÷ guide"] == "100.0× (10× in one call)" and slow[speed] == "MISS"
    alone = dict(
        zip(
            script.HEADERS,
            script.row(harness.ModelResult(MODELS["engel_loglinear"], groups[:1])),
            strict=True,
        )
    )
    assert alone["guide s/dataset"] == "10 ms" and alone[speed] == "PASS"


def test_groups_are_stacked_by_size(script):
    from real_models import harness
    from real_models.models import Dataset

    datasets = [
        Dataset(f"g{i}", np.full((n, 2), float(i)), np.full(n, float(i)))
        for i, n in enumerate((3, 5, 3))
    ]
    batches = harness._groups_by_size(datasets)
    assert [tuple(x.shape) for x, _ in batches] == [(2, 3, 2), (1, 5, 2)]
    assert batches[0][1][:, 0].tolist() == [0.0, 2.0] and batches[1][1][0, 0] == 1.0


def test_a_failed_fit_is_its_row(script):
    from real_models import harness
    from real_models.models import MODELS

    failed = harness.ModelResult(MODELS["randhie_poisson"], error="fit failed: ValueError: x")
    cells = script.row(failed)
    assert len(cells) == len(script.HEADERS) and cells[2] == "fit failed: ValueError: x"
