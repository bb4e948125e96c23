"""Permutation-invariant set encoders: a dataset ``{h_n}`` ↦ an embedding ``e ∈ ℝ^E``.

* :class:`DeepSets` (Zaheer et al. 2017): ``e = ρ([mean_n φ(h_n), log N])``.
* :class:`SetTransformer` (Lee et al. 2019): two induced-set-attention blocks (ISAB,
  ``m`` inducing points, cost ``O(N m)``) and pooling by multi-head attention (PMA).

Both append the count feature ``log N`` (the size of the whole dataset, which may
exceed the number of points shown) so that the posterior can contract with ``N``.
Inputs are ``(T, n, F)``, with ``N`` one count or one per task ``(T,)``; outputs
``(T, E)``. An optional boolean ``mask`` ``(T, n)`` marks the valid points of a padded
batch (datasets of unequal sizes stacked as tasks): padded points are left out of every
mean and every attention (their keys are masked), so a task's embedding is the one its
valid points alone give.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from iai_prob.encoder_sizes import encoder_sizes
from iai_prob.models.pyro_networks import mlp

__all__ = ["ENCODERS", "DeepSets", "SetTransformer", "get_encoder"]


def _count_feature(features: torch.Tensor, total_points) -> torch.Tensor:
    """``log N / log 1024`` per task ``(T, 1)``; ``total_points`` is a count or ``(T,)``."""
    if not torch.is_tensor(total_points):
        total_points = float(total_points)
    count = torch.as_tensor(total_points, dtype=features.dtype, device=features.device)
    return (count.log() / math.log(1024.0)).reshape(-1, 1).expand(features.shape[0], 1)


def _padding(mask: torch.Tensor | None) -> torch.Tensor | None:
    """``nn.MultiheadAttention``'s ``key_padding_mask`` (``True`` = ignore) of ``mask``."""
    return None if mask is None else ~mask


class DeepSets(nn.Module):
    """``e = ρ([mean_n φ(h_n), log N / log 1024])``; ``sizes`` as
    :class:`~iai_prob.encoder_sizes.DeepSetsSizes` (its defaults for those not given)."""

    def __init__(self, feature_dim: int, **sizes):
        super().__init__()
        sizes = encoder_sizes("deep_sets", sizes)
        hidden = sizes.hidden_dim
        self.embed_dim = sizes.embed_dim
        self.phi = mlp([feature_dim, hidden, hidden, hidden])
        self.rho = mlp([hidden + 1, hidden, sizes.embed_dim])

    def forward(self, features: torch.Tensor, total_points, mask=None) -> torch.Tensor:
        hidden = self.phi(features)
        if mask is None:
            pooled = hidden.mean(dim=-2)
        else:
            weights = mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * weights).sum(-2) / weights.sum(-2)
        return self.rho(torch.cat([pooled, _count_feature(features, total_points)], dim=-1))


class _MultiheadAttentionBlock(nn.Module):
    """MAB(X, Y) = LN(H + FF(H)), H = LN(X + Attention(X, Y, Y))."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_1 = nn.LayerNorm(dim)
        self.norm_2 = nn.LayerNorm(dim)
        self.feed_forward = mlp([dim, 2 * dim, dim])

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, mask=None) -> torch.Tensor:
        attended, _ = self.attention(
            queries, keys, keys, key_padding_mask=_padding(mask), need_weights=False
        )
        hidden = self.norm_1(queries + attended)
        return self.norm_2(hidden + self.feed_forward(hidden))


class _InducedSetAttentionBlock(nn.Module):
    """ISAB(X) = MAB(X, MAB(I, X)) with ``m`` learned inducing points ``I``."""

    def __init__(self, dim: int, num_heads: int, num_inducing: int):
        super().__init__()
        self.inducing = nn.Parameter(torch.randn(1, num_inducing, dim) / math.sqrt(dim))
        self.summarize = _MultiheadAttentionBlock(dim, num_heads)
        self.broadcast = _MultiheadAttentionBlock(dim, num_heads)

    def forward(self, points: torch.Tensor, mask=None) -> torch.Tensor:
        inducing = self.inducing.expand(points.shape[0], -1, -1)
        return self.broadcast(points, self.summarize(inducing, points, mask))


class SetTransformer(nn.Module):
    """Set Transformer encoder: embed → ISAB × ``num_blocks`` → PMA(1 seed) → MLP;
    ``sizes`` as :class:`~iai_prob.encoder_sizes.SetTransformerSizes` (its defaults for
    those not given)."""

    def __init__(self, feature_dim: int, **sizes):
        super().__init__()
        sizes = encoder_sizes("set_transformer", sizes)
        hidden, heads = sizes.hidden_dim, sizes.num_heads
        self.embed_dim = sizes.embed_dim
        self.embed = nn.Linear(feature_dim, hidden)
        self.blocks = nn.ModuleList(
            _InducedSetAttentionBlock(hidden, heads, sizes.num_inducing)
            for _ in range(sizes.num_blocks)
        )
        self.seed = nn.Parameter(torch.randn(1, 1, hidden) / math.sqrt(hidden))
        self.pool = _MultiheadAttentionBlock(hidden, heads)
        self.output = mlp([hidden + 1, hidden, sizes.embed_dim])

    def forward(self, features: torch.Tensor, total_points, mask=None) -> torch.Tensor:
        hidden = self.embed(features)
        for block in self.blocks:
            hidden = block(hidden, mask)
        seed = self.seed.expand(hidden.shape[0], -1, -1)
        pooled = self.pool(seed, hidden, mask).squeeze(-2)
        return self.output(torch.cat([pooled, _count_feature(features, total_points)], dim=-1))


ENCODERS = {"deep_sets": DeepSets, "set_transformer": SetTransformer}
"""Set encoders by name (the guide's ``encoder=`` option)."""


def get_encoder(name: str, feature_dim: int, **sizes) -> nn.Module:
    """Build the set encoder ``name`` for ``feature_dim``-dimensional per-datum features
    (an unknown name or size is refused in one line,
    :func:`~iai_prob.encoder_sizes.encoder_sizes`)."""
    encoder_sizes(name, sizes)
    return ENCODERS[name](feature_dim, **sizes)
