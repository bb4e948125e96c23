"""Maximum mean discrepancy between two samples (Gretton et al. 2012).

For samples ``X = {x_1 … x_m} ~ P`` and ``Y = {y_1 … y_n} ~ Q`` and a kernel ``k``, the
unbiased estimator of the squared MMD (Gretton, Borgwardt, Rasch, Schölkopf and Smola,
"A Kernel Two-Sample Test", JMLR 13, 2012, Lemma 6) is

    MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j)
             − 2/(mn) Σ_{i,j} k(x_i, y_j),

with expectation ``MMD²(P, Q) = ‖μ_P − μ_Q‖²_H``, zero iff ``P = Q`` for a characteristic
kernel such as the Gaussian RBF ``k(a, b) = exp(−‖a − b‖² / (2h²))``. Being unbiased it
can be slightly negative when ``P = Q``. The bandwidth ``h`` defaults to the median
heuristic: the median of the pairwise distances ``‖a − b‖`` of the pooled sample,
``a ≠ b`` (Gretton et al. 2012, §8; Garreau, Jitkrittum and Kanagawa 2017, "Large
sample analysis of the median heuristic").

Leading batch dims are independent problems (e.g. one per task), each with its own
median bandwidth.
"""

from __future__ import annotations

import torch

__all__ = ["median_bandwidth", "mmd"]


def _check_samples(x: torch.Tensor, y: torch.Tensor) -> None:
    for name, sample in (("x", x), ("y", y)):
        if not isinstance(sample, torch.Tensor) or not sample.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor (..., points, dim)")
        if sample.dim() < 2:
            raise ValueError(
                f"{name} must have shape (..., points, dim), got {tuple(sample.shape)}"
            )
        if sample.shape[-2] < 2:
            raise ValueError(
                f"{name} needs at least 2 points for the unbiased estimator, got {sample.shape[-2]}"
            )
        if not bool(torch.isfinite(sample).all()):
            raise ValueError(f"{name} contains non-finite values")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y differ in dimension: {x.shape[-1]} vs {y.shape[-1]}")
    if x.shape[:-2] != y.shape[:-2]:
        raise ValueError(
            f"x and y differ in batch shape: {tuple(x.shape[:-2])} vs {tuple(y.shape[:-2])}"
        )


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Median heuristic ``h``: the median pairwise distance of the pooled sample, ``(...)``.

    Falls back to 1 where the median is 0 (more than half the pooled points coincide,
    e.g. binary data with few distinct values).
    """
    _check_samples(x, y)
    pooled = torch.cat([x, y], dim=-2)
    distances = torch.cdist(pooled, pooled)
    rows, columns = torch.triu_indices(pooled.shape[-2], pooled.shape[-2], offset=1)
    median = torch.quantile(distances[..., rows, columns], 0.5, dim=-1)
    return torch.where(median > 0, median, torch.ones_like(median))


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: torch.Tensor | float | None = None):
    """Unbiased ``MMD²_u`` with a Gaussian RBF kernel (see the module docstring).

    :param x: sample of ``P``, ``(..., m, d)``.
    :param y: sample of ``Q``, ``(..., n, d)``; the same batch dims and ``d``.
    :param bandwidth: the kernel's ``h`` (a float or a tensor of the batch shape);
        default the median heuristic (:func:`median_bandwidth`).
    :returns: ``MMD²_u`` per batch element, shape ``(...)``.
    """
    _check_samples(x, y)
    if bandwidth is None:
        bandwidth = median_bandwidth(x, y)
    bandwidth = torch.as_tensor(bandwidth, dtype=x.dtype, device=x.device)
    if not bool((bandwidth > 0).all()):
        raise ValueError("bandwidth must be positive")
    scale = (2 * bandwidth**2)[..., None, None]

    def kernel(a, b):
        return torch.exp(-torch.cdist(a, b).square() / scale)

    m, n = x.shape[-2], y.shape[-2]
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    within_x = (k_xx.sum((-1, -2)) - k_xx.diagonal(dim1=-2, dim2=-1).sum(-1)) / (m * (m - 1))
    within_y = (k_yy.sum((-1, -2)) - k_yy.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))
    return within_x + within_y - 2 * k_xy.mean((-1, -2))
