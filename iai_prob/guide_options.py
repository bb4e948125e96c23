"""The options of an ``IterativeAmortizedGuide``, checked and recorded once for both backends.

The PyTorch guide (:class:`iai_prob.inference.IterativeAmortizedGuide`) and its NumPyro
twin (:class:`iai_prob.numpyro.IterativeAmortizedGuide`) take the same keyword arguments
and write the same ``config`` into their checkpoint cards, so that a checkpoint of either
loads in the other. This module holds the option names (:data:`SIGNALS`,
:data:`LINEARIZATIONS`, :data:`UPDATE_RULES`), their checks (one ``ValueError`` naming the
bad value), the record (:func:`guide_config`) and the constructor both guides inherit
(:class:`GuideOptions`). Torch-free and JAX-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from iai_prob.checks import check_non_negative_int
from iai_prob.convergence_settings import DEFAULT_CONVERGENCE, Convergence
from iai_prob.encoder_sizes import encoder_sizes
from iai_prob.latent_layout import layout_difference
from iai_prob.posterior_families import FAMILY_NAMES

__all__ = [
    "GRADIENT_RULES",
    "LINEARIZATIONS",
    "SIGNALS",
    "UPDATE_RULES",
    "GuideOptions",
    "check_convergence",
    "check_linearization",
    "check_signals",
    "guide_config",
]

SIGNALS = ("data", "grad")
"""What a refinement step may see: the mini-batch embedding and the ELBO gradient."""
LINEARIZATIONS = ("sigma_points", "mean", "samples")
"""Where the log-likelihood's gradient and curvature are taken (``linearization=``)."""
GRADIENT_RULES = ("maml", "meta_sgd")
"""Plain-gradient update rules: one learned step size (MAML) or one per coordinate (Meta-SGD)."""
UPDATE_RULES = ("natural_gradient", *GRADIENT_RULES)
"""Refinement update rules: the learned natural-gradient step, MAML and Meta-SGD."""


def check_signals(signals: Iterable[str]) -> tuple[str, ...]:
    """``signals`` as a tuple, a non-empty subset of :data:`SIGNALS`."""
    signals = tuple(signals)
    if not signals or any(s not in SIGNALS for s in signals):
        raise ValueError(f"signals must be a non-empty subset of {SIGNALS}, got {signals!r}")
    return signals


def check_linearization(linearization: str) -> str:
    """``linearization``, one of :data:`LINEARIZATIONS`."""
    if linearization not in LINEARIZATIONS:
        raise ValueError(f"unknown linearization {linearization!r}; choose from {LINEARIZATIONS}")
    return linearization


def check_convergence(convergence) -> Convergence | None:
    """``convergence``, a :class:`~iai_prob.convergence_settings.Convergence` or ``None``."""
    if convergence is not None and not isinstance(convergence, Convergence):
        raise ValueError(
            "convergence must be an iai_prob.convergence_settings.Convergence (also "
            f"iai_prob.inference.Convergence) or None, got {type(convergence).__name__}"
        )
    return convergence


def _check_update(update: str, implemented: tuple[str, ...]) -> None:
    if update in UPDATE_RULES and update not in implemented:
        raise ValueError(
            f"update={update!r} is implemented in the PyTorch guide only "
            "(iai_prob.inference.IterativeAmortizedGuide); this guide implements "
            f"update={implemented[0]!r}"
        )
    if update not in UPDATE_RULES:
        raise ValueError(f"unknown update {update!r}; choose from {UPDATE_RULES}")


def guide_config(
    *,
    family: str,
    encoder: str,
    num_steps: int | None,
    batch_size: int,
    signals: Iterable[str],
    data_plate: str,
    tasks_plate: str,
    linearization: str,
    num_particles: int,
    context_size: int,
    rank: int,
    encoder_options: dict | None,
    seed: int,
    update: str,
    inner_lr: float,
    max_relinearizations: int,
    standardize: bool,
    updates: tuple[str, ...] = UPDATE_RULES,
) -> dict:
    """The guide's ``config`` (what its checkpoint card records) from its keyword
    arguments, each checked (the encoder and its ``encoder_options`` by
    :func:`~iai_prob.encoder_sizes.encoder_sizes`, the posterior family against
    :data:`~iai_prob.posterior_families.FAMILY_NAMES`); ``updates`` are the update rules
    the backend implements (a rule of :data:`UPDATE_RULES` outside them is refused by
    name)."""
    if num_steps is not None and (int(num_steps) != num_steps or num_steps < 0):
        raise ValueError(f"num_steps must be None or a non-negative integer, got {num_steps!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_non_negative_int("max_relinearizations", max_relinearizations)
    signals = check_signals(signals)
    if family not in FAMILY_NAMES:
        raise ValueError(f"unknown posterior family {family!r}; choose from {sorted(FAMILY_NAMES)}")
    _check_update(update, updates)
    check_linearization(linearization)
    if not isinstance(standardize, bool):
        raise ValueError(f"standardize must be True or False, got {standardize!r}")
    if encoder_options is not None and not isinstance(encoder_options, dict):
        raise ValueError(
            f"encoder_options must be a dict of the encoder's arguments, got {encoder_options!r}"
        )
    encoder_sizes(encoder, encoder_options or {})
    return {
        "family": family,
        "encoder": encoder,
        "num_steps": num_steps,
        "batch_size": int(batch_size),
        "signals": list(signals),
        "data_plate": data_plate,
        "tasks_plate": tasks_plate,
        "linearization": linearization,
        "num_particles": num_particles,
        "context_size": context_size,
        "rank": rank,
        "encoder_options": dict(encoder_options or {}),
        "seed": seed,
        "update": update,
        "inner_lr": float(inner_lr),
        "max_relinearizations": int(max_relinearizations),
        "standardize": standardize,
    }


class GuideOptions:
    """The constructor both backends' ``IterativeAmortizedGuide`` inherit: their keyword
    options (documented at :class:`iai_prob.inference.IterativeAmortizedGuide`), checked
    and recorded as ``config`` (:func:`guide_config`, what a checkpoint card holds), the
    convergence rule, and the state a guide starts with (no status, no layout, no card).

    A backend's guide takes the model in :meth:`_attach_model` (called once the options
    are checked) and names the update rules it implements in
    :attr:`implemented_updates`.
    """

    implemented_updates: tuple[str, ...] = UPDATE_RULES

    def __init__(
        self,
        model,
        *,
        family: str = "full_rank",
        encoder: str = "set_transformer",
        num_steps: int | None = None,
        batch_size: int = 64,
        signals: tuple[str, ...] = SIGNALS,
        data_plate: str = "data",
        tasks_plate: str = "tasks",
        linearization: str = "sigma_points",
        num_particles: int = 8,
        context_size: int = 256,
        rank: int = 2,
        encoder_options: dict | None = None,
        featurize: Callable | None = None,
        seed: int = 0,
        update: str = "natural_gradient",
        inner_lr: float = 0.1,
        max_relinearizations: int = 2,
        standardize: bool = True,
        convergence: Convergence | None = DEFAULT_CONVERGENCE,
    ):
        config = guide_config(
            family=family,
            encoder=encoder,
            num_steps=num_steps,
            batch_size=batch_size,
            signals=signals,
            data_plate=data_plate,
            tasks_plate=tasks_plate,
            linearization=linearization,
            num_particles=num_particles,
            context_size=context_size,
            rank=rank,
            encoder_options=encoder_options,
            seed=seed,
            update=update,
            inner_lr=inner_lr,
            max_relinearizations=max_relinearizations,
            standardize=standardize,
            updates=self.implemented_updates,
        )
        convergence = check_convergence(convergence)
        self._attach_model(model)
        self.config = config
        self.convergence = convergence
        self.featurize = featurize
        self.last_status = None  # the PosteriorStatus of the latest default answer
        self.layout_signature: list | None = None  # the model's latent layout, once seen
        self.card: dict = {}  # the checkpoint card the guide was loaded from

    def _reading(self) -> dict:
        """How the guide reads a dataset off a model trace: its data and tasks plates and
        its ``featurize`` (the keywords of each backend's ``read_task_data``)."""
        return {
            "data_plate": self.config["data_plate"],
            "tasks_plate": self.config["tasks_plate"],
            "featurize": self.featurize,
        }

    def _check_dataset(self, layout, num_features: int, built_for: int | None) -> None:
        """Refuse, in one line, a dataset whose global latents differ from those the guide
        was built for (``layout``, a :class:`~iai_prob.latent_layout.LatentLayout`), or
        whose points have ``num_features`` features where the guide takes ``built_for``
        (``None``: not built yet)."""
        expected, found = self.layout_signature, layout.signature()
        if expected is not None and found != expected:
            raise ValueError(
                f"the model's global latents {found} differ from those the guide was built for "
                f"{expected} ({layout_difference(expected, found)}); was the guide trained for "
                "another model, or were sites renamed?"
            )
        if built_for is not None and num_features != built_for:
            raise ValueError(
                f"the data give {num_features} features per point but the guide was built for "
                f"{built_for}; check the covariates' dimension"
            )

    def _attach_model(self, model) -> None:
        """Take ``model`` (a model, a task family or a family's ``model`` method) and set
        the backend's own attributes."""
        raise NotImplementedError
