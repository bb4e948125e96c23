"""Datasets shipped inside the package (no download at run time).

``linear_regression_demo.csv``: 2,000 rows ``x0 … x7, y`` drawn once from
``LinearRegression(dim=8, noise_scale=0.5)`` with seed 2025 by
``python -m iai_prob.datasets`` (the true weights are in ``linear_regression_demo.json``),
so the demo can compare the amortized posterior with the exact one and the truth.

``schools_demo.csv``: many small datasets in one file, the main use case of
``iai infer --group``: 120 groups (``school`` = ``s000`` … ``s119``) of 8 to 48 rows
``x0 … x7, y``, each drawn from the same ``LinearRegression(dim=8, noise_scale=0.5)``
with its own weights (in ``schools_demo.json``), rows shuffled across groups.
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import torch

__all__ = [
    "DEMO_SEED",
    "dataset_path",
    "load_linear_regression_demo",
    "write_linear_regression_demo",
    "write_schools_demo",
]

DEMO_SEED = 2025
"""Seed of every shipped dataset (``python -m iai_prob.datasets`` redraws them)."""
_DEMO = "linear_regression_demo"
_SCHOOLS = "schools_demo"


def dataset_path(name: str) -> Path:
    """Path of the shipped file ``name`` (e.g. ``"schools_demo.csv"``)."""
    path = Path(__file__).resolve().parent / name
    if not path.is_file():
        raise FileNotFoundError(f"no shipped dataset {name!r} in {path.parent}")
    return path


def load_linear_regression_demo() -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(x, y, info)`` of the shipped demo dataset; ``info`` holds the true weights."""
    folder = resources.files(__package__)
    with (folder / f"{_DEMO}.csv").open() as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    values = torch.tensor([[float(v) for v in row] for row in body])
    info = json.loads((folder / f"{_DEMO}.json").read_text())
    info["columns"] = header
    return values[:, :-1], values[:, -1], info


def write_linear_regression_demo(folder: Path, num_points: int = 2000) -> None:
    """Regenerate the demo dataset (what ``python -m iai_prob.datasets`` runs)."""
    from iai_prob.models import LinearRegression

    family = LinearRegression(dim=8, noise_scale=0.5)
    generator = torch.Generator().manual_seed(DEMO_SEED)
    theta, x, y = family.sample(1, num_points, generator=generator)
    columns = [f"x{i}" for i in range(family.dim)] + ["y"]
    with open(folder / f"{_DEMO}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in torch.cat([x[0], y[0].unsqueeze(-1)], dim=-1).tolist():
            writer.writerow([f"{v:.6f}" for v in row])
    info = {
        "family": family.name,
        "config": family.config(),
        "seed": DEMO_SEED,
        "true_w": theta["w"][0].tolist(),
        "command": "python -m iai_prob.datasets",
    }
    (folder / f"{_DEMO}.json").write_text(json.dumps(info, indent=2))


def write_schools_demo(folder: Path, num_groups: int = 120, sizes: tuple = (8, 48)) -> None:
    """Regenerate ``schools_demo.csv`` and its JSON (true weights per group)."""
    from iai_prob.models import LinearRegression

    family = LinearRegression(dim=8, noise_scale=0.5)
    generator = torch.Generator().manual_seed(DEMO_SEED + 1)
    rows, truth = [], {}
    for index in range(num_groups):
        size = int(torch.randint(sizes[0], sizes[1] + 1, (), generator=generator))
        theta, x, y = family.sample(1, size, generator=generator)
        key = f"s{index:03d}"
        truth[key] = theta["w"][0].tolist()
        rows += [[key, *row] for row in torch.cat([x[0], y[0].unsqueeze(-1)], -1).tolist()]
    order = torch.randperm(len(rows), generator=generator).tolist()
    with open(folder / f"{_SCHOOLS}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["school"] + [f"x{i}" for i in range(family.dim)] + ["y"])
        for i in order:
            writer.writerow([rows[i][0]] + [f"{v:.4f}" for v in rows[i][1:]])
    info = {
        "family": family.name,
        "config": family.config(),
        "seed": DEMO_SEED + 1,
        "true_w": truth,
        "command": "python -m iai_prob.datasets",
    }
    (folder / f"{_SCHOOLS}.json").write_text(json.dumps(info, indent=1))
