"""Permutation-invariant set encoders in equinox: ``{h_n}`` ↦ ``e ∈ ℝ^E``.

The JAX twins of :mod:`iai_prob.inference.encoders`, with the same parameter names and
shapes as the PyTorch modules (``weight`` is ``(out, in)``, attention keeps torch's packed
``in_proj_weight``), so a checkpoint maps one to one:

* :class:`DeepSets` (Zaheer et al. 2017): ``e = ρ([mean_n φ(h_n), log N / log 1024])``;
* :class:`SetTransformer` (Lee et al. 2019): ISAB × 2, PMA with one seed, an MLP head.

Inputs are ``(T, n, F)`` features and a boolean ``mask`` of the valid points, ``(n,)``
for every task or ``(T, n)`` per task (datasets of unequal sizes in one padded batch),
with the count ``N`` one number or one per task ``(T,)``: padded points are left out of
every mean and attention (keys masked to ``−∞``), so a padded mini-batch gives the
embedding of the unpadded one, which keeps mini-batches of different sizes in one
compiled ``lax.scan``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from iai_prob.encoder_sizes import encoder_sizes

__all__ = [
    "ENCODERS",
    "MLP",
    "DeepSets",
    "LayerNorm",
    "Linear",
    "MultiheadAttention",
    "SetTransformer",
    "get_encoder",
]


def _uniform(key, shape, bound):
    return jax.random.uniform(key, shape, minval=-bound, maxval=bound)


class Linear(eqx.Module):
    """``y = x Wᵀ + b``; initialized as ``torch.nn.Linear`` (uniform ``±1/√fan_in``)."""

    weight: jax.Array
    bias: jax.Array

    def __init__(
        self, fan_in: int, fan_out: int, *, key, zero: bool = False, zero_bias: bool = False
    ):
        weight_key, bias_key = jax.random.split(key)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        self.weight = (
            jnp.zeros((fan_out, fan_in)) if zero else _uniform(weight_key, (fan_out, fan_in), bound)
        )
        self.bias = (
            jnp.zeros((fan_out,)) if zero or zero_bias else _uniform(bias_key, (fan_out,), bound)
        )

    def __call__(self, x):
        return x @ self.weight.T + self.bias


class MLP(eqx.Module):
    """Linear layers with exact (erf) GELU between them, as
    :func:`iai_prob.models.pyro_networks.mlp` in torch."""

    layers: tuple[Linear, ...]

    def __init__(self, sizes: list[int], *, key, zero_last: bool = False):
        keys = jax.random.split(key, len(sizes) - 1)
        count = len(sizes) - 1
        self.layers = tuple(
            Linear(fan_in, fan_out, key=k, zero=zero_last and i == count - 1)
            for i, (fan_in, fan_out, k) in enumerate(zip(sizes[:-1], sizes[1:], keys, strict=True))
        )

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.gelu(x, approximate=False)
        return x


class LayerNorm(eqx.Module):
    """``torch.nn.LayerNorm`` over the last dim (``eps = 1e-5``)."""

    weight: jax.Array
    bias: jax.Array

    def __init__(self, dim: int):
        self.weight = jnp.ones((dim,))
        self.bias = jnp.zeros((dim,))

    def __call__(self, x):
        mean = x.mean(-1, keepdims=True)
        variance = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / jnp.sqrt(variance + 1e-5) * self.weight + self.bias


class MultiheadAttention(eqx.Module):
    """``torch.nn.MultiheadAttention(batch_first=True)`` with a key mask."""

    in_proj_weight: jax.Array
    in_proj_bias: jax.Array
    out_proj: Linear
    num_heads: int = eqx.field(static=True)

    def __init__(self, dim: int, num_heads: int, *, key):
        in_key, out_key = jax.random.split(key)
        bound = math.sqrt(6.0 / (dim + 3 * dim))  # xavier_uniform on (3E, E)
        self.in_proj_weight = _uniform(in_key, (3 * dim, dim), bound)
        self.in_proj_bias = jnp.zeros((3 * dim,))
        self.out_proj = Linear(dim, dim, key=out_key, zero_bias=True)
        self.num_heads = num_heads

    def __call__(self, queries, keys, mask=None):
        dim = queries.shape[-1]
        heads = self.num_heads
        w_q, w_k, w_v = jnp.split(self.in_proj_weight, 3)
        b_q, b_k, b_v = jnp.split(self.in_proj_bias, 3)

        def split(x):  # (T, n, E) -> (T, heads, n, E / heads)
            return x.reshape(*x.shape[:-1], heads, dim // heads).swapaxes(-2, -3)

        q = split(queries @ w_q.T + b_q)
        k = split(keys @ w_k.T + b_k)
        v = split(keys @ w_v.T + b_v)
        logits = (q / math.sqrt(dim // heads)) @ k.swapaxes(-1, -2)
        if mask is not None:  # (n,) or per task (T, n) against logits (T, heads, q, n)
            logits = jnp.where(mask if mask.ndim == 1 else mask[:, None, None, :], logits, -jnp.inf)
        attended = jax.nn.softmax(logits, axis=-1) @ v
        attended = attended.swapaxes(-2, -3).reshape(*queries.shape[:-1], dim)
        return self.out_proj(attended)


class _MultiheadAttentionBlock(eqx.Module):
    """MAB(X, Y) = LN(H + FF(H)), H = LN(X + Attention(X, Y, Y))."""

    attention: MultiheadAttention
    norm_1: LayerNorm
    norm_2: LayerNorm
    feed_forward: MLP

    def __init__(self, dim: int, num_heads: int, *, key):
        attention_key, forward_key = jax.random.split(key)
        self.attention = MultiheadAttention(dim, num_heads, key=attention_key)
        self.norm_1 = LayerNorm(dim)
        self.norm_2 = LayerNorm(dim)
        self.feed_forward = MLP([dim, 2 * dim, dim], key=forward_key)

    def __call__(self, queries, keys, mask=None):
        hidden = self.norm_1(queries + self.attention(queries, keys, mask))
        return self.norm_2(hidden + self.feed_forward(hidden))


class _InducedSetAttentionBlock(eqx.Module):
    """ISAB(X) = MAB(X, MAB(I, X)) with ``m`` learned inducing points ``I``."""

    inducing: jax.Array
    summarize: _MultiheadAttentionBlock
    broadcast: _MultiheadAttentionBlock

    def __init__(self, dim: int, num_heads: int, num_inducing: int, *, key):
        inducing_key, summarize_key, broadcast_key = jax.random.split(key, 3)
        self.inducing = jax.random.normal(inducing_key, (1, num_inducing, dim)) / math.sqrt(dim)
        self.summarize = _MultiheadAttentionBlock(dim, num_heads, key=summarize_key)
        self.broadcast = _MultiheadAttentionBlock(dim, num_heads, key=broadcast_key)

    def __call__(self, points, mask=None):
        inducing = jnp.broadcast_to(self.inducing, (points.shape[0], *self.inducing.shape[1:]))
        return self.broadcast(points, self.summarize(inducing, points, mask))


def _count_feature(features, total_points):
    """``log N / log 1024`` per task ``(T, 1)``; ``total_points`` is a count or ``(T,)``."""
    count = jnp.log(jnp.asarray(total_points, features.dtype)) / math.log(1024.0)
    return jnp.broadcast_to(count.reshape(-1, 1), (features.shape[0], 1))


class DeepSets(eqx.Module):
    """``e = ρ([mean_n φ(h_n), log N / log 1024])``; ``sizes`` as
    :class:`~iai_prob.encoder_sizes.DeepSetsSizes` (its defaults for those not given)."""

    phi: MLP
    rho: MLP
    embed_dim: int = eqx.field(static=True)

    def __init__(self, feature_dim: int, *, key, **sizes):
        sizes = encoder_sizes("deep_sets", sizes)
        hidden = sizes.hidden_dim
        phi_key, rho_key = jax.random.split(key)
        self.embed_dim = sizes.embed_dim
        self.phi = MLP([feature_dim, hidden, hidden, hidden], key=phi_key)
        self.rho = MLP([hidden + 1, hidden, sizes.embed_dim], key=rho_key)

    def __call__(self, features, total_points, mask=None):
        hidden = self.phi(features)
        if mask is None:
            pooled = hidden.mean(-2)
        else:
            weights = mask.astype(hidden.dtype)[..., None]
            pooled = (hidden * weights).sum(-2) / weights.sum(-2)
        return self.rho(jnp.concatenate([pooled, _count_feature(features, total_points)], -1))


class SetTransformer(eqx.Module):
    """Set Transformer encoder: embed → ISAB × ``num_blocks`` → PMA(1 seed) → MLP;
    ``sizes`` as :class:`~iai_prob.encoder_sizes.SetTransformerSizes` (its defaults for
    those not given)."""

    embed: Linear
    blocks: tuple[_InducedSetAttentionBlock, ...]
    seed: jax.Array
    pool: _MultiheadAttentionBlock
    output: MLP
    embed_dim: int = eqx.field(static=True)

    def __init__(self, feature_dim: int, *, key, **sizes):
        sizes = encoder_sizes("set_transformer", sizes)
        hidden, heads = sizes.hidden_dim, sizes.num_heads
        keys = jax.random.split(key, sizes.num_blocks + 4)
        self.embed_dim = sizes.embed_dim
        self.embed = Linear(feature_dim, hidden, key=keys[0])
        self.blocks = tuple(
            _InducedSetAttentionBlock(hidden, heads, sizes.num_inducing, key=k) for k in keys[4:]
        )
        self.seed = jax.random.normal(keys[1], (1, 1, hidden)) / math.sqrt(hidden)
        self.pool = _MultiheadAttentionBlock(hidden, heads, key=keys[2])
        self.output = MLP([hidden + 1, hidden, sizes.embed_dim], key=keys[3])

    def __call__(self, features, total_points, mask=None):
        hidden = self.embed(features)
        for block in self.blocks:
            hidden = block(hidden, mask)
        seed = jnp.broadcast_to(self.seed, (hidden.shape[0], *self.seed.shape[1:]))
        pooled = self.pool(seed, hidden, mask)[..., 0, :]
        return self.output(jnp.concatenate([pooled, _count_feature(features, total_points)], -1))


ENCODERS = {"deep_sets": DeepSets, "set_transformer": SetTransformer}
"""Set encoders by name (the guide's ``encoder=`` option)."""


def get_encoder(name: str, feature_dim: int, *, key, **sizes) -> eqx.Module:
    """Build the set encoder ``name`` for ``feature_dim``-dimensional per-datum features
    (an unknown name or size is refused in one line,
    :func:`~iai_prob.encoder_sizes.encoder_sizes`)."""
    encoder_sizes(name, sizes)
    return ENCODERS[name](feature_dim, key=key, **sizes)
