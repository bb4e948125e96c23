"""The card of a guide checkpoint: its schema, checked before anything acts on it.

A guide's card (written by :func:`iai_prob.inference.checkpoint.save_guide` and its JAX
twin) describes what to build: the guide's options, the latent and feature dimensions,
the latent layout and the model it was trained for. A tampered card could ask for a
latent dimension of 200,000 or a task family of dimension 10⁹; so, after
:func:`iai_prob.checkpoint_format.read_card` has checked the hashes, both backends run
these checks, in this order, before allocating anything the card sizes:

1. :func:`check_guide_card`: every field has its type and range (ints are ints, names are
   known, the layout adds up to ``latent_dim``), without touching the weights;
2. :func:`check_family_layout`: the task family the card names, built from its
   configuration (cheaply: the PyTorch side builds it on the ``meta`` device), has the
   card's layout, so a configuration cannot size the model beyond the weights;
3. :func:`check_weight_shapes`: the shapes the guide would have (built on the ``meta``
   device in PyTorch, by ``eqx.filter_eval_shape`` in JAX) equal the shapes in the
   safetensors header (:func:`iai_prob.checkpoint_format.tensor_shapes`).

The model is never taken from a card: a card's ``entrypoint`` (the ``module:function`` an
``iai train`` run was given) is a note for the user, never imported.

Torch-free and JAX-free: both backends import this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from iai_prob.checkpoint_format import CheckpointError, read_card, tensor_shapes

__all__ = [
    "GUIDE_KIND",
    "MAX_PARTICLES",
    "CheckedCheckpoint",
    "build_from_card",
    "check_family_layout",
    "check_finite_weights",
    "check_guide_card",
    "check_model_identity",
    "check_weight_shapes",
    "family_layout",
    "model_identity",
    "new_guide_card",
    "read_guide_checkpoint",
]

GUIDE_KIND = "IterativeAmortizedGuide"
"""The card's ``kind`` for a guide checkpoint."""
MAX_PARTICLES = 4096
"""Most Monte Carlo particles a card may ask for (a size no weight shape bounds)."""

_INT_OPTIONS = (
    "batch_size",
    "num_particles",
    "context_size",
    "rank",
    "max_relinearizations",
    "seed",
)
_STR_OPTIONS = ("family", "encoder", "data_plate", "tasks_plate", "linearization", "update")
_GUIDE_OPTIONS = {*_INT_OPTIONS, *_STR_OPTIONS, "num_steps", "signals"}
_BOOL_OPTIONS = ("standardize",)
_GUIDE_OPTIONS |= {"encoder_options", "inner_lr", *_BOOL_OPTIONS}
_REQUIRED = ("guide", "latent_dim", "feature_dim", "layout", "model")


_MAX_INT = 2**63 - 1
"""Larger integers overflow torch's and NumPy's int64."""


def _is_int(value) -> bool:
    # bool is an int subclass; JSON floats are not ints; past int64 nothing can use it
    return type(value) is int and abs(value) <= _MAX_INT


def _refuse(source: str, message: str):
    raise CheckpointError(f"checkpoint {source}: {message}")


def _check_options(options, source: str) -> None:
    if not isinstance(options, dict):
        _refuse(source, f"the card's 'guide' must be an object, got {type(options).__name__}")
    unknown = sorted(set(options) - _GUIDE_OPTIONS)
    if unknown:
        _refuse(source, f"the card's guide options {unknown} are unknown")
    for name in _INT_OPTIONS:
        if name in options and not (_is_int(options[name]) and options[name] >= 0):
            _refuse(
                source, f"guide option {name} must be a non-negative integer, got {options[name]!r}"
            )
    if options.get("num_particles", 0) > MAX_PARTICLES:
        _refuse(
            source,
            f"guide option num_particles {options['num_particles']:,} exceeds {MAX_PARTICLES:,}",
        )
    for name in _STR_OPTIONS:
        if name in options and not isinstance(options[name], str):
            _refuse(source, f"guide option {name} must be a string, got {options[name]!r}")
    for name in _BOOL_OPTIONS:
        if name in options and not isinstance(options[name], bool):
            _refuse(source, f"guide option {name} must be true or false, got {options[name]!r}")
    steps = options.get("num_steps")
    if steps is not None and not (_is_int(steps) and steps >= 0):
        _refuse(source, f"guide option num_steps must be null or an integer >= 0, got {steps!r}")
    signals = options.get("signals", [])
    if not isinstance(signals, list) or not all(isinstance(s, str) for s in signals):
        _refuse(source, f"guide option signals must be a list of names, got {signals!r}")
    if not isinstance(options.get("encoder_options", {}), dict):
        _refuse(source, "guide option encoder_options must be an object")


def _check_layout(layout, latent_dim: int, source: str) -> None:
    valid = isinstance(layout, list) and all(
        isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], list)
        and all(_is_int(size) and size >= 0 for size in entry[1])
        for entry in layout
    )
    if not valid:
        _refuse(source, f"the card's layout must be a list of [site name, shape], got {layout!r}")
    names = [name for name, _ in layout]
    if len(set(names)) != len(names):
        _refuse(source, f"the card's layout names a site twice: {names}")
    total = sum(math.prod(shape) for _, shape in layout)
    if total != latent_dim:
        _refuse(
            source,
            f"the card's layout has {total:,} latent scalars but its latent_dim is {latent_dim:,}",
        )


def _check_model(identity, source: str) -> None:
    if not isinstance(identity, dict):
        _refuse(source, f"the card's 'model' must be an object, got {identity!r}")
    if set(identity) == {"family", "config"}:
        if not isinstance(identity["family"], str) or not isinstance(identity["config"], dict):
            _refuse(source, f"the card's model must name a family and its config, got {identity}")
    elif set(identity) == {"callable"}:
        if not isinstance(identity["callable"], str):
            _refuse(source, f"the card's model callable must be a name, got {identity}")
    else:
        _refuse(
            source,
            f"the card's model must be {{family, config}} or {{callable}}, got {sorted(identity)}",
        )


def check_guide_card(card: Mapping, source: str) -> None:
    """Refuse (:class:`CheckpointError`) a guide card whose fields have the wrong type or
    range, or that do not agree with each other; reads nothing but the card."""
    if card.get("kind") != GUIDE_KIND:
        _refuse(source, f"holds a {card.get('kind')!r}, not an {GUIDE_KIND}")
    missing = [key for key in _REQUIRED if key not in card]
    if missing:
        _refuse(source, f"the card lacks {missing}")
    _check_options(card["guide"], source)
    latent_dim, feature_dim = card["latent_dim"], card["feature_dim"]
    if not (_is_int(latent_dim) and latent_dim >= 1):
        _refuse(source, f"latent_dim must be a positive integer, got {latent_dim!r}")
    if not (_is_int(feature_dim) and feature_dim >= 0):
        _refuse(source, f"feature_dim must be a non-negative integer, got {feature_dim!r}")
    _check_layout(card["layout"], latent_dim, source)
    _check_model(card["model"], source)
    if not isinstance(card.get("learned_model", False), bool):
        _refuse(source, f"learned_model must be true or false, got {card['learned_model']!r}")
    if not isinstance(card.get("entrypoint", ""), str):
        _refuse(source, f"entrypoint must be a string, got {card['entrypoint']!r}")


def family_layout(family, biject_to: Callable) -> list[list]:
    """The layout (site name, unconstrained shape) of a task family's global latents, as
    the guide's ``layout_signature`` writes it; ``biject_to`` is the backend's."""
    return [
        [site.name, list(biject_to(site.support).inverse_shape(site.shape))]
        for site in family.latent_sites
    ]


def check_family_layout(card: Mapping, family, biject_to: Callable, source: str) -> None:
    """Refuse a task family (built from the card's configuration) whose latent layout is
    not the card's: a configuration cannot size the model beyond the weights.

    Sites are compared by name, not by position: the card keeps the order in which the
    model's trace met them (checked again on the first call), which need not be the
    order of ``family.latent_sites``."""
    layout = family_layout(family, biject_to)
    if sorted(layout) != sorted(card["layout"]):
        _refuse(
            source,
            f"the task family {family!r} has the latent layout {layout}, the card {card['layout']}",
        )


def check_weight_shapes(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], source: str
) -> None:
    """Refuse weights whose tensor names or shapes (``found``, from the file's header)
    differ from those of the guide the card describes (``expected``)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        _refuse(
            source,
            f"the weights do not fit the guide its card describes: missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}",
        )
    wrong = [
        f"{name} {tuple(found[name])} (expected {tuple(expected[name])})"
        for name in sorted(expected)
        if tuple(found[name]) != tuple(expected[name])
    ]
    if wrong:
        _refuse(
            source,
            f"the weights do not fit the guide its card describes (latent_dim, "
            f"feature_dim or options edited?): {', '.join(wrong[:3])}",
        )


def check_finite_weights(finite: Mapping[str, bool], source: str) -> None:
    """Refuse weights of which some tensor (``finite[name]`` false) holds NaN or inf: a
    damaged or diverged run, which would otherwise surface as a non-finite posterior
    blamed on the data."""
    broken = sorted(name for name, ok in finite.items() if not ok)
    if broken:
        _refuse(
            source,
            f"the weights {broken[:3]} hold NaN or inf values (a damaged or diverged training run)",
        )


class CheckedCheckpoint(NamedTuple):
    """A guide checkpoint whose card passed :func:`check_guide_card`; nothing it sizes is
    built yet and no weight is read."""

    path: Path
    weights: Path
    card: dict
    shapes: dict[str, tuple[int, ...]]


def read_guide_checkpoint(path) -> CheckedCheckpoint:
    """The card of the guide checkpoint ``path``, its hashes, schema and fields checked, and
    the weights' shapes from the safetensors header (the first step of either backend's
    loader)."""
    weights, card = read_card(path)
    shapes = tensor_shapes(weights, floating=True)
    check_guide_card(card, str(path))
    return CheckedCheckpoint(Path(path), weights, card, shapes)


def build_from_card(guide_class, model, checked: CheckedCheckpoint):
    """``guide_class(model, **card["guide"])``, a bad configuration refused with one
    :class:`CheckpointError` naming the checkpoint."""
    # a card written before the option existed was trained from the standard-normal start
    config = {"standardize": False, **checked.card["guide"]}
    try:
        return guide_class(model, **config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {checked.path} has an invalid guide config: {error}"
        ) from None


def model_identity(guide) -> dict:
    """What the card records about the model: the task family and its configuration, else
    the model's qualified name (a poutine messenger around it unwrapped)."""
    if guide.family is not None:
        return {"family": guide.family.name, "config": guide.family.config()}
    model = getattr(guide.model, "fn", guide.model)
    return {"callable": getattr(model, "__qualname__", type(model).__name__)}


def new_guide_card(guide, refiner, **fields) -> dict:
    """The card a backend's ``save_guide`` writes for ``guide`` and its built ``refiner``:
    kind, guide configuration, latent and feature dimensions, latent layout, model
    identity, then ``fields`` (e.g. budget and measured quality)."""
    return {
        "kind": GUIDE_KIND,
        "guide": guide.config,
        "latent_dim": refiner.latent_dim,
        "feature_dim": refiner.feature_dim,
        "layout": guide.layout_signature,
        "model": model_identity(guide),
        **fields,
    }


def check_model_identity(guide, checked: CheckedCheckpoint, biject_to: Callable) -> None:
    """Refuse a guide built for another model than the card's, or (for a task family) with
    another latent layout; ``biject_to`` is the backend's."""
    expected, found = checked.card["model"], model_identity(guide)
    if expected != found:
        raise CheckpointError(
            f"checkpoint {checked.path} was trained for model {expected}, not for {found}"
        )
    if guide.family is not None:
        check_family_layout(checked.card, guide.family, biject_to, str(checked.path))
