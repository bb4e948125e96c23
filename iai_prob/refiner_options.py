"""How a refiner refines: its options, checked once for both backends.

A refiner (:class:`iai_prob.inference.refinement.Refiner` in PyTorch,
:class:`iai_prob.numpyro.refinement.Refiner` in JAX) holds the learned pieces of the
refinement ``λ_{k+1} = λ_k + ρ_k (λ̂_k − λ_k)`` (Mittal, Mahajan, Lajoie, Pezeshki 2025,
§3): the set encoder, the initial head and the update rule. What it is built with, and
what its steps and the convergence phase read, is one :class:`RefinerOptions`: the
encoder and its sizes, the signals a step sees, where the log-likelihood is linearized,
the precision floor, how often a step may re-linearize, the update rule and whether the
state is read in prior units. A guide makes it from its ``config``
(:meth:`RefinerOptions.of_config`), so both backends build the same refiner from the same
checkpoint card. Torch-free and JAX-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iai_prob.checks import check_non_negative_int, check_positive, check_positive_int
from iai_prob.guide_options import SIGNALS, UPDATE_RULES, check_linearization, check_signals

__all__ = ["STEP_FEATURES", "RefinerOptions"]

STEP_FEATURES = 5
"""The scale-free features of one step a learned update sees: the step count, ``N`` and
the batch size on a log scale, the target's distance from the state and their log-volume
ratio (``step_context`` of each backend's ``updates``)."""


@dataclass(frozen=True)
class RefinerOptions:
    """The options of a refiner (both backends), checked when made.

    :ivar encoder: the set encoder's name, a key of
        :data:`~iai_prob.encoder_sizes.ENCODER_SIZES`.
    :ivar encoder_options: the encoder's sizes
        (:func:`~iai_prob.encoder_sizes.encoder_sizes`).
    :ivar signals: what a step sees, a non-empty subset of ``("data", "grad")``.
    :ivar linearization: where ``E_q`` of the log-likelihood's gradient and curvature is
        taken: ``"sigma_points"``, ``"mean"`` or ``"samples"``.
    :ivar num_particles: draws for ``linearization="samples"``.
    :ivar context_size: at most this many points go into the one-shot encoder.
    :ivar min_precision: the floor of the state's precision eigenvalues.
    :ivar max_relinearizations: a step whose proposal moved the state by more than 0.5
        nats (KL) recomputes the gradient signal at the proposal and retakes the step
        from the same state, up to this many times (a proximal step: matters for
        non-conjugate models started far from the posterior, costs nothing for
        conjugate ones, whose targets do not depend on the linearization point).
    :ivar update: the update rule, one of
        :data:`~iai_prob.guide_options.UPDATE_RULES` (the JAX refiner implements
        ``"natural_gradient"``).
    :ivar inner_lr: the initial step size of the plain-gradient rules.
    :ivar standardize: read the initial state in prior units and the features through
        ``asinh`` (:mod:`iai_prob.prior_standardization`).
    """

    encoder: str = "set_transformer"
    encoder_options: dict = field(default_factory=dict, hash=False)
    signals: tuple[str, ...] = SIGNALS
    linearization: str = "sigma_points"
    num_particles: int = 8
    context_size: int = 256
    min_precision: float = 1e-3
    max_relinearizations: int = 2
    update: str = "natural_gradient"
    inner_lr: float = 0.1
    standardize: bool = False

    def __post_init__(self):
        object.__setattr__(self, "signals", check_signals(self.signals))
        object.__setattr__(self, "encoder_options", dict(self.encoder_options or {}))
        check_linearization(self.linearization)
        if self.update not in UPDATE_RULES:
            raise ValueError(f"update must be one of {UPDATE_RULES}, got {self.update!r}")
        check_positive_int("num_particles", self.num_particles)
        check_positive_int("context_size", self.context_size)
        check_positive("min_precision", self.min_precision)
        check_non_negative_int("max_relinearizations", self.max_relinearizations)

    def step_context_dim(self, embed_dim: int) -> int:
        """The width of what a learned step sees: the step's :data:`STEP_FEATURES`
        scale-free features, then the mini-batch's embedding (``embed_dim`` wide) when
        ``"data"`` is a signal; part of the checkpoint format (the update network's
        input)."""
        return STEP_FEATURES + (embed_dim if "data" in self.signals else 0)

    @classmethod
    def of_config(cls, config: dict) -> RefinerOptions:
        """The options a guide's ``config`` (its checkpoint card's) builds its refiner with;
        a card older than ``update``, ``inner_lr``, ``max_relinearizations`` or
        ``standardize`` gets the values it was trained with."""
        return cls(
            encoder=config["encoder"],
            encoder_options=config["encoder_options"],
            signals=tuple(config["signals"]),
            linearization=config["linearization"],
            num_particles=config["num_particles"],
            context_size=config["context_size"],
            max_relinearizations=config.get("max_relinearizations", 2),
            update=config.get("update", "natural_gradient"),
            inner_lr=config.get("inner_lr", 0.1),
            standardize=config.get("standardize", False),
        )
