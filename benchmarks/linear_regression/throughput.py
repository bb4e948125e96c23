"""Section 4: batched throughput (datasets per second) and what bounds it."""

from __future__ import annotations

import torch
from common import verdict
from torch.utils.flop_counter import FlopCounterMode

from iai_prob.inference import IterativeAmortizedGuide

from .shared import (
    LEAN_GUIDE,
    Settings,
    Table,
    best_time,
    duration,
    held_out,
    kl_per_step,
    median,
    nats,
    timed,
    train_here,
)


def throughput_tables(guide, settings: Settings, oneshot: IterativeAmortizedGuide) -> list[Table]:
    """Section 4: datasets per second of ``guide.posterior`` on a batch of tasks, with the
    median KL each guide reaches on them (4a); the ceiling that the set encoder's arithmetic
    puts on the pretrained guide on this machine (4b)."""
    lean = train_here(guide, settings, **LEAN_GUIDE)
    table = Table(
        f"4. Throughput at N = {settings.throughput_n}: datasets per second",
        [
            "guide",
            "tasks per call",
            "precompile (once per shape)",
            "time per call",
            "datasets / s",
            "median KL",
            "target",
            "verdict",
        ],
    )
    guides = {
        "iterative (pretrained)": guide,
        "one-shot (num_steps=0)": oneshot,
        "lean iterative (trained here)": lean.guide,
    }
    for num_tasks in settings.throughput_batches:
        x, y = held_out(guide.family, num_tasks, settings.throughput_n, salt=11)
        for name, candidate in guides.items():
            compiling = timed(candidate.precompile, x, y)[1]
            spent = best_time(settings.repeats, candidate.posterior, x, y)
            rate = num_tasks / spent
            pretrained = candidate is guide
            table.add(
                name,
                num_tasks,
                duration(compiling),
                duration(spent),
                f"{rate:,.0f}",
                nats(median(kl_per_step(candidate, x, y)[-1])),
                f"≥ {settings.throughput_target:,.0f}" if pretrained else "-",
                verdict(rate >= settings.throughput_target) if pretrained else "-",
            )
    large = kl_per_step(lean.guide, *held_out(guide.family, settings.large_chunk, settings.large_n))
    table.notes += [
        f"guide.posterior(x, y), x of shape (T, {settings.throughput_n}, 8); median of "
        f"{settings.repeats} calls after guide.precompile(x, y) (its TorchInductor kernels "
        "for this shape, as a user does before many datasets of one shape; excluded as "
        f"NumPyro's jit is) and a warm-up, torch threads: {torch.get_num_threads()}; "
        "median KL(q ‖ exact) over the same tasks",
        f"lean: {LEAN_GUIDE}, trained here with the pretrained card's budget in "
        f"{lean.seconds:.0f} s; its median KL at N = {settings.large_n:,} "
        f"({settings.large_chunk} tasks, one pass) is {nats(median(large[-1]))} nats, "
        "so it is not the shipped guide",
    ]
    return [table, throughput_bound_table(guide, settings)]


def encoder_flops_per_dataset(guide: IterativeAmortizedGuide, num_points: int) -> float:
    """Matrix-multiply FLOPs of the guide's set encoder for one dataset of ``num_points``
    at the default answer, which encodes the context once (the convergence phase starts
    from ``λ_0``; no learned mini-batch steps): torch's ``FlopCounterMode``, elementwise
    work such as softmax and norms left out."""
    size = min(num_points, guide.config["context_size"])
    features = torch.zeros(1, size, guide.refiner.feature_dim)
    with FlopCounterMode(display=False) as counter:
        guide.refiner.encoder(features, num_points)
    return float(counter.get_total_flops())


def matmul_peak_flops(size: int = 2048, repeats: int = 10) -> float:
    """Float32 FLOP/s of a ``size``² matrix product on this machine (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(timed(torch.matmul, a, b)[1] for _ in range(repeats))
    return 2 * size**3 / best


def throughput_bound_table(guide, settings: Settings) -> Table:
    """Section 4b: where a posterior's time goes on the largest batch (the encoder's
    ``λ_0`` against the rest: the convergence phase and ``k̂``), and the rate the encoder
    alone allows at this machine's matmul peak."""
    num_tasks = max(settings.throughput_batches)
    x, y = held_out(guide.family, num_tasks, settings.throughput_n, salt=11)
    data = guide.prepare(x, y).data
    with torch.no_grad():
        encoder = best_time(settings.repeats, guide.initial_state, data)
        whole = best_time(settings.repeats, guide.posterior, x, y)
    flops = encoder_flops_per_dataset(guide, settings.throughput_n)
    peak = matmul_peak_flops()
    table = Table(
        f"4b. What bounds the throughput at N = {settings.throughput_n} ({num_tasks} tasks "
        "per call)",
        ["quantity", "value"],
    )
    table.add("measured: the whole posterior", f"{num_tasks / whole:,.0f} datasets / s")
    table.add(
        "measured: the set encoder's λ_0 alone (guide.initial_state)",
        f"{num_tasks / encoder:,.0f} datasets / s ({encoder / whole:.0%} of the time)",
    )
    rest = max(whole - encoder, 1e-9)
    table.add(
        "measured: the rest (convergence phase and k̂, 1,000 draws)",
        f"{num_tasks / rest:,.0f} datasets / s",
    )
    table.add("set-encoder matmul work per dataset", f"{flops / 1e6:.2f} MFLOP")
    table.add(
        f"float32 matmul peak of this machine (2048² product, {torch.get_num_threads()} threads)",
        f"{peak / 1e9:.1f} GFLOP/s",
    )
    table.add(
        "datasets / s if the encoder ran at that peak and nothing else ran",
        f"{peak / flops:,.0f}",
    )
    table.notes.append(
        f"the guide's encoder is a {guide.config['encoder']} that sees the "
        f"{min(settings.throughput_n, guide.config['context_size'])}-point context once (the "
        "default answer runs no learned mini-batch steps); its matrix products are small "
        "(hidden width 32, 8 inducing points), far from the 2048² product's peak"
    )
    return table
