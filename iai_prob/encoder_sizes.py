"""The sizes of the set encoders, written once for both backends.

The set encoders (:mod:`iai_prob.inference.encoders` in PyTorch,
:mod:`iai_prob.numpyro.encoders` in JAX) have the same parameters of the same shapes,
so that a checkpoint of either loads in the other; their shapes follow from the sizes
here, the guide's ``encoder_options`` (recorded in the checkpoint card). Each size is
checked once, with one line naming the option, when a guide is made. Torch-free and
JAX-free.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from iai_prob.checks import check_positive_int

__all__ = ["ENCODER_SIZES", "DeepSetsSizes", "SetTransformerSizes", "encoder_sizes"]


@dataclass(frozen=True)
class DeepSetsSizes:
    """Sizes of a Deep Sets encoder ``e = ρ([mean_n φ(h_n), log N / log 1024])``.

    :ivar embed_dim: ``E``, the embedding's width.
    :ivar hidden_dim: the width of ``φ`` (three layers) and of ``ρ``'s hidden layer.
    """

    embed_dim: int = 32
    hidden_dim: int = 64


@dataclass(frozen=True)
class SetTransformerSizes:
    """Sizes of a Set Transformer encoder: embed → ISAB × ``num_blocks`` → PMA → MLP.

    :ivar embed_dim: ``E``, the embedding's width.
    :ivar hidden_dim: the width of the attention blocks (a multiple of ``num_heads``).
    :ivar num_heads: attention heads per block.
    :ivar num_inducing: ``m``, the inducing points of each ISAB (cost ``O(N m)``).
    :ivar num_blocks: the number of ISABs.
    """

    embed_dim: int = 32
    hidden_dim: int = 32
    num_heads: int = 4
    num_inducing: int = 8
    num_blocks: int = 2

    def __post_init__(self):
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"encoder_options: hidden_dim={self.hidden_dim} must be a multiple of "
                f"num_heads={self.num_heads}"
            )


ENCODER_SIZES = {"deep_sets": DeepSetsSizes, "set_transformer": SetTransformerSizes}
"""The sizes of each set encoder, by name (the guide's ``encoder=`` option)."""


def encoder_sizes(name: str, options: dict) -> DeepSetsSizes | SetTransformerSizes:
    """The sizes of encoder ``name`` from ``options`` (a guide's ``encoder_options``; the
    defaults for those not given), or a ``ValueError`` naming the unknown encoder, the
    unknown option or the size that is not a positive integer."""
    if name not in ENCODER_SIZES:
        raise ValueError(f"unknown encoder {name!r}; choose from {sorted(ENCODER_SIZES)}")
    sizes = ENCODER_SIZES[name]
    known = [field.name for field in fields(sizes)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"encoder_options {unknown} are not options of the {name!r} encoder; it takes {known}"
        )
    for option, value in options.items():
        check_positive_int(f"encoder_options[{option!r}]", value)
    return sizes(**{option: int(value) for option, value in options.items()})
