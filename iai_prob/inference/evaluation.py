"""Held-out evaluation of a trained guide against exact posteriors."""

from __future__ import annotations

import torch

from iai_prob.inference.objectives import kl_to_exact
from iai_prob.models.base import TaskFamily

__all__ = ["evaluate_exact_kl", "held_out_kl"]


@torch.no_grad()
def held_out_kl(
    guide,
    family: TaskFamily,
    num_points: int,
    *,
    num_tasks: int = 256,
    num_steps: int | None = None,
    seed: int = 12345,
) -> torch.Tensor:
    """``KL(q ‖ p(θ | D))`` for ``num_tasks`` fresh tasks of ``num_points`` points, ``(T,)``."""
    generator = torch.Generator().manual_seed(seed + num_points)
    _, x, y = family.sample(num_tasks, num_points, generator=generator)
    task = guide.prepare(x, y)
    state = guide.final_state(task, num_steps=num_steps)
    order = tuple(site.name for site in family.latent_sites)
    return kl_to_exact(
        state, guide.refiner.family, task.layout, family.exact_posterior(x, y), site_order=order
    )


def evaluate_exact_kl(guide, family: TaskFamily, sizes, *, num_tasks: int = 256) -> dict:
    """Median held-out KL per dataset size (fewer tasks above 4,096 points)."""
    return {
        str(n): float(
            held_out_kl(guide, family, n, num_tasks=num_tasks if n <= 4096 else 32).median()
        )
        for n in sizes
    }
