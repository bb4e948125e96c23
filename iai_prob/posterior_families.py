"""The Gaussian posterior families' structure, written once for both backends.

The refinement keeps ``N(μ, Λ⁻¹)`` in natural parameters (Khan & Lin 2017), and a
family fixes which structure the precision ``Λ`` keeps:

* ``"diagonal"``: ``Λ = diag(λ)``, the mean-field family of ``AutoNormal``;
* ``"low_rank"``: ``Λ = diag(λ) + U Uᵀ`` with ``U ∈ ℝ^{D×r}``;
* ``"full_rank"``: any symmetric positive-definite ``Λ = L Lᵀ``.

What does not depend on the array library lives here: a family's name, its options and
their checks, its configuration (saved in checkpoint cards) and the length of its raw
layout (the encoder head's output, part of the checkpoint format shared by both
backends), and the lookup by name. Each backend's ``posteriors`` module adds the array
code: ``from_raw`` (network outputs to ``(μ, Λ)``), ``project`` (a positive-definite
target onto the structure) and ``distribution`` (:mod:`iai_prob.inference.posteriors`
for PyTorch, :mod:`iai_prob.numpyro.posteriors` for JAX).
"""

from __future__ import annotations

__all__ = [
    "FAMILY_NAMES",
    "LOG_PRECISION_RANGE",
    "DiagonalStructure",
    "FamilyStructure",
    "FullRankStructure",
    "LowRankStructure",
    "family_class",
    "family_options",
]

LOG_PRECISION_RANGE = (-13.8, 18.4)
"""Log-precisions produced by networks are clamped to this range (precision 1e-6 … 1e8)."""


class FamilyStructure:
    """A family's name, latent dimension, options and raw layout (see module docstring)."""

    name: str = ""

    def __init__(self, latent_dim: int):
        self.latent_dim = latent_dim

    def config(self) -> dict:
        """The options that rebuild the family (a checkpoint card's ``family`` entry)."""
        return {"family": self.name}

    def num_raw(self) -> int:
        """How many raw numbers define ``(μ, Λ)``."""
        raise NotImplementedError

    def _identity(self) -> tuple:
        return (type(self), self.latent_dim, tuple(sorted(self.config().items())))

    def __eq__(self, other):
        """Equal by value (class, dimension, options): a family is a constant of compiled
        steps (a static field of JAX's compiled refiner, part of a compiled kernel's key)."""
        return isinstance(other, FamilyStructure) and self._identity() == other._identity()

    def __hash__(self):
        return hash(self._identity())


class DiagonalStructure(FamilyStructure):
    """``Λ = diag(λ)``: raw ``(μ, log λ)``."""

    name = "diagonal"

    def num_raw(self) -> int:
        return 2 * self.latent_dim


class LowRankStructure(FamilyStructure):
    """``Λ = diag(λ) + U Uᵀ`` with ``U`` of rank ``rank`` (at most ``D``): raw
    ``(μ, log λ, U)``."""

    name = "low_rank"

    def __init__(self, latent_dim: int, rank: int = 2):
        super().__init__(latent_dim)
        if rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        self.rank = min(rank, latent_dim)

    def config(self) -> dict:
        return {"family": self.name, "rank": self.rank}

    def num_raw(self) -> int:
        return 2 * self.latent_dim + self.latent_dim * self.rank


class FullRankStructure(FamilyStructure):
    """``Λ = L Lᵀ``: raw ``(μ, L)`` with ``L``'s lower triangle row by row (its diagonal
    as ``2 log L_ii``)."""

    name = "full_rank"

    def num_raw(self) -> int:
        d = self.latent_dim
        return d + d * (d + 1) // 2


FAMILY_NAMES = tuple(cls.name for cls in (DiagonalStructure, LowRankStructure, FullRankStructure))
"""The family names a guide's ``family=`` option takes."""


def family_options(config: dict) -> dict:
    """The keyword arguments a guide's ``config`` builds its family with (``rank`` for
    ``"low_rank"``)."""
    return {"rank": config["rank"]} if config["family"] == "low_rank" else {}


def family_class(families: dict[str, type], name: str) -> type:
    """The class of family ``name`` among a backend's ``families``, or a one-line error."""
    if name not in families:
        raise ValueError(f"unknown posterior family {name!r}; choose from {sorted(families)}")
    return families[name]
