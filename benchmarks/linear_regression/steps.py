"""Section 2: the median KL after each refinement step of one pass, against the exact
streaming average of the same mini-batches (it must not increase)."""

from __future__ import annotations

import math

import torch
from common import verdict

from iai_prob.inference.posteriors import gaussian_kl as natural_gaussian_kl

from .shared import Settings, Table, held_out, held_out_kl_per_step, nats


def _reported_steps(num_steps: int) -> list[int]:
    """``0, 1, 2, 4, 8, …, K``."""
    steps = [0] + [2**i for i in range(int(math.log2(max(num_steps, 1))) + 1)]
    return sorted({k for k in steps if k <= num_steps} | {num_steps})


def largest_increase(curve: torch.Tensor) -> tuple[float, int]:
    """The largest ``curve[k] − curve[k−1]`` and its step ``k`` (``(0.0, 0)`` if none)."""
    increases = curve[1:] - curve[:-1]
    k = int(increases.argmax())
    return max(float(increases[k]), 0.0), (k + 1 if increases[k] > 0 else 0)


def _increase_cell(curve: torch.Tensor, increase: float, step: int) -> str:
    if step == 0:
        return "none"
    return f"{increase:.3g} at step {step} ({increase / float(curve[step - 1]):.1%} of KL_(k-1))"


@torch.no_grad()
def streaming_average_kl_per_step(guide, x, y) -> torch.Tensor:
    """``KL(q_k ‖ exact)`` ``(K + 1, T)`` of the exact streaming average over the guide's
    mini-batches: ``q_k``'s natural parameters are the mean of the first ``k`` batch
    targets (``ρ_k = 1/k``), each the exact posterior given its batch with the likelihood
    scaled by ``N/|B|``,

        Λ̂_B = Λ_0 + (N/|B|) X_Bᵀ X_B / σ²,   η̂_B = (N/|B|) X_Bᵀ y_B / σ²,

    the best that averaging one pass of mini-batch targets can do (its ``q_K`` is exact);
    ``q_0`` is the prior.
    """
    family = guide.family
    x, y = x.double(), y.double()
    num_tasks, num_points, dim = x.shape
    exact = family.exact_posterior(x, y)
    exact_loc, exact_precision = exact.loc, exact.precision_matrix
    prior_precision = torch.eye(dim, dtype=x.dtype) / family.prior_scale**2
    linear = torch.zeros(num_tasks, dim, dtype=x.dtype)
    precision = prior_precision.expand(num_tasks, dim, dim)
    kls = [natural_gaussian_kl(linear, precision, exact_loc, exact_precision)]
    for k, index in enumerate(guide.schedule(num_points), start=1):
        scale = num_points / len(index) / family.noise_scale**2
        x_b, y_b = x[:, index], y[:, index]
        target_precision = prior_precision + scale * x_b.mT @ x_b
        target_linear = scale * (x_b.mT @ y_b.unsqueeze(-1)).squeeze(-1)
        linear = linear + (target_linear - linear) / k
        precision = precision + (target_precision - precision) / k
        loc = torch.linalg.solve(precision, linear)
        kls.append(natural_gaussian_kl(loc, precision, exact_loc, exact_precision).clamp_min(0))
    return torch.stack(kls)


def steps_tables(guide, settings: Settings) -> list[Table]:
    """Section 2: median KL after each step of one pass, and the monotonicity check, with
    the exact streaming average (:func:`streaming_average_kl_per_step`) beside the guide."""
    curves, references = {}, {}
    for num_points, num_tasks in settings.step_sizes:
        kls, _ = held_out_kl_per_step(guide, num_tasks, num_points)
        curves[(num_points, kls.shape[1])] = torch.quantile(kls.double(), 0.5, dim=1)
        reference = streaming_average_kl_per_step(
            guide, *held_out(guide.family, num_tasks, num_points)
        )
        references[num_points] = torch.quantile(reference, 0.5, dim=1)
    headers = ["step k"]
    for num_points, num_tasks in curves:
        headers += [f"N = {num_points} ({num_tasks} tasks)", f"N = {num_points}, reference"]
    table = Table("2a. Median KL(q_k ‖ exact) after step k of one pass, nats", headers)
    longest = max(len(curve) for curve in curves.values()) - 1
    columns = [c for n, _ in curves for c in (curves[(n, _)], references[n])]
    for k in _reported_steps(longest):
        table.add(k, *(nats(c[k]) if k < len(c) else "-" for c in columns))
    table.notes.append(
        "mini-batches of 64; K = N/64; step 0 is the set-encoder state (the prior for the "
        "reference, the exact streaming average of 2b)"
    )
    check = Table(
        "2b. Median KL non-increasing in k",
        [
            "N",
            "K",
            "refinement",
            "steps where the median rose",
            "largest increase of the median KL (nats)",
            "KL at K",
            "verdict",
        ],
    )
    for (num_points, _), curve in curves.items():
        rows = {"guide": curve, "exact streaming average (reference)": references[num_points]}
        for name, median_curve in rows.items():
            increase, at = largest_increase(median_curve)
            check.add(
                num_points,
                len(median_curve) - 1,
                name,
                int((median_curve[1:] > median_curve[:-1]).sum()),
                _increase_cell(median_curve, increase, at),
                nats(median_curve[-1]),
                verdict(increase == 0.0) if name == "guide" else "-",
            )
    check.notes.append("checked over every step k, not only the printed ones")
    check.notes.append(
        "reference: the same tasks and mini-batches, with q_k the exact average of the first k "
        "batch targets (rho_k = 1/k; each target the exact posterior given its batch with the "
        "likelihood scaled by N/|B|); its q_K is exact, so the rises it shows come from which "
        "64 points a step sees, not from a learned update"
    )
    return [table, check]
