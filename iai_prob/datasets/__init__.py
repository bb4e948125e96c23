"""Datasets shipped inside the package (no download at run time).

``linear_regression_demo.csv``: 2,000 rows ``x0 … x7, y`` drawn once from
``LinearRegression(dim=8, noise_scale=0.5)`` with seed 2025 by
``python -m iai_prob.datasets`` (the true weights are in ``linear_regression_demo.json``),
so the demo can compare the amortized posterior with the exact one and the truth.
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import torch

__all__ = ["DEMO_SEED", "load_linear_regression_demo", "write_linear_regression_demo"]

DEMO_SEED = 2025
_DEMO = "linear_regression_demo"


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
