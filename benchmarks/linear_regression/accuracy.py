"""Section 1: accuracy vs N, the median KL of the pretrained guide to the exact posterior
against a one-shot (``num_steps=0``) guide of the same architecture trained here."""

from __future__ import annotations

import torch
from common import (
    HELD_OUT_SEED,
    verdict,
)

from iai_prob.inference import RefinementError

from .shared import (
    Settings,
    Table,
    TrainedHere,
    duration,
    held_out,
    held_out_kl_per_step,
    kl_per_step,
    median,
    nats,
)


def _accuracy_cell(guide, settings: Settings, num_points: int):
    """Final KLs ``(T,)``, number of steps and seconds per task for one size."""
    if num_points != settings.large_n:
        kls, spent = held_out_kl_per_step(guide, settings.accuracy_tasks, num_points)
        return kls[-1], kls.shape[0] - 1, spent / kls.shape[1]
    finals, spent, chunk = [], 0.0, 0
    while chunk == 0 or spent < settings.large_seconds:
        kls, taken = held_out_kl_per_step(guide, settings.large_chunk, num_points, chunk)
        finals.append(kls[-1])
        spent, chunk = spent + taken, chunk + 1
    return torch.cat(finals), kls.shape[0] - 1, spent / (chunk * settings.large_chunk)


def _oneshot_kl(oneshot, num_points: int, num_tasks: int, chunk: int) -> torch.Tensor:
    """One-shot KLs on the same held-out tasks as the iterative guide (chunks of ``chunk``)."""
    salts = range(num_tasks // chunk) if num_tasks > chunk else [0]
    size = min(chunk, num_tasks)
    return torch.cat(
        [kl_per_step(oneshot, *held_out(oneshot.family, size, num_points, s))[-1] for s in salts]
    )


def accuracy_table(guide, settings: Settings, baseline: TrainedHere) -> Table:
    """Section 1: median KL to the exact posterior vs N, iterative and one-shot."""
    oneshot = baseline.guide
    table = Table(
        "1. Accuracy vs N: median KL(q ‖ exact posterior), nats",
        [
            "N",
            "tasks",
            "steps K",
            "s / task",
            "iterative (pretrained)",
            "target",
            "verdict",
            "one-shot (num_steps=0)",
        ],
    )
    for num_points in (*settings.accuracy_sizes, settings.large_n):
        try:
            kls, steps, per_task = _accuracy_cell(guide, settings, num_points)
        except RefinementError as error:
            table.add(num_points, "-", "-", "-", f"RefinementError: {error}", "-", "MISS", "-")
            continue
        large = num_points == settings.large_n
        target = settings.accuracy_targets[int(large)]
        chunk = settings.large_chunk if large else settings.accuracy_tasks
        oneshot_kls = _oneshot_kl(oneshot, num_points, len(kls), chunk)
        table.add(
            num_points,
            len(kls),
            steps,
            duration(per_task),
            nats(median(kls)),
            f"≤ {target}",
            verdict(median(kls) <= target),
            nats(median(oneshot_kls)),
        )
    card = guide.card.get("budget", {})
    table.notes += [
        f"iterative: the pretrained guide, trained {card.get('steps')} steps x "
        f"{card.get('tasks_per_step')} tasks, N in {card.get('num_points')}, objective "
        f"{card.get('objective')}, in {card.get('seconds')} s ({card.get('machine')}); one pass "
        "in mini-batches of 64 (N/64 steps) from the set-encoder state of 256 context points",
        f"N = {settings.large_n}: chunks of {settings.large_chunk} tasks until "
        f"{settings.large_seconds:.0f} s were spent; same tasks for both guides",
        f"one-shot: same architecture and posterior family, num_steps=0, trained here with "
        f"fit({', '.join(f'{k}={v}' for k, v in baseline.options.items())}, seed=0) in "
        f"{baseline.seconds:.0f} s; context_size={oneshot.config['context_size']} so that the "
        "encoder sees every point at every N of this table",
        f"held-out tasks: seeds from {HELD_OUT_SEED} + 1000 N (training seeds are < 10^6)",
    ]
    return table
