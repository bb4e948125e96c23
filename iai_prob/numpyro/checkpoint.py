"""Checkpoints for the NumPyro guide, in the format the PyTorch guide writes and reads.

Weights are safetensors under the PyTorch ``state_dict`` names of the refiner
(``encoder.blocks.0.summarize.attention.in_proj_weight``, ``update.correction.0.weight``,
…; an equinox ``MLP``'s ``layers[i]`` is torch's ``Sequential`` entry ``2i``, the GELUs
taking the odd slots), the card is the same JSON (guide configuration, latent layout,
model identity, SHA-256 of the weights and of the card). So a checkpoint written by either
backend loads in the other. Loading checks the card before acting on it
(:mod:`iai_prob.guide_card`): hashes, schema, another model, a changed layout, and the
shapes of the guide the card describes (``eqx.filter_eval_shape``, nothing allocated)
against the safetensors header, before the weights are read. Never pickled; no torch
import; the model is the caller's, never a name from the card. The guide depends on this
module, never the other way: :meth:`IterativeAmortizedGuide.load
<iai_prob.numpyro.IterativeAmortizedGuide.load>` (and
:func:`~iai_prob.numpyro.guide.load_guide`) builds the guide between
:func:`~iai_prob.guide_card.read_guide_checkpoint` and :func:`restore_guide`.
"""

from __future__ import annotations

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions.transforms import biject_to
from safetensors.numpy import load_file, save_file

from iai_prob.checkpoint_format import (
    CheckpointError,
    atomic_write,
    checkpoint_paths,
    read_card,
    write_card,
)
from iai_prob.guide_card import (
    CheckedCheckpoint,
    check_finite_weights,
    check_model_identity,
    check_weight_shapes,
    new_guide_card,
)

__all__ = [
    "CheckpointError",
    "load_refiner",
    "read_checkpoint",
    "refiner_tensors",
    "restore_guide",
    "save_guide",
    "write_checkpoint",
]


def _torch_name(path) -> str:
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(entry.name)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        else:  # pragma: no cover - equinox modules only hold attributes and tuples
            raise TypeError(f"unexpected pytree key {entry!r}")
    name = ".".join(parts)
    return re.sub(r"layers\.(\d+)", lambda match: str(2 * int(match[1])), name)


def _refiner_shapes(shape_tree) -> dict[str, tuple[int, ...]]:
    """Torch names and shapes of a refiner built by ``eqx.filter_eval_shape``."""
    leaves = jax.tree_util.tree_leaves_with_path(
        shape_tree, is_leaf=lambda leaf: isinstance(leaf, jax.ShapeDtypeStruct)
    )
    return {
        _torch_name(path): tuple(leaf.shape)
        for path, leaf in leaves
        if isinstance(leaf, jax.ShapeDtypeStruct) and jnp.issubdtype(leaf.dtype, jnp.inexact)
    }


def refiner_tensors(refiner) -> dict[str, np.ndarray]:
    """The refiner's arrays under PyTorch ``state_dict`` names."""
    params = eqx.filter(refiner, eqx.is_inexact_array)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return {_torch_name(path): np.asarray(leaf, np.float32) for path, leaf in leaves}


def load_refiner(refiner, tensors: dict, *, source: str = "checkpoint"):
    """``refiner`` with its arrays replaced by ``tensors`` (PyTorch names)."""
    params, static = eqx.partition(refiner, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [_torch_name(path) for path, _ in leaves]
    missing = [n for n in names if n not in tensors]
    unexpected = [n for n in tensors if n not in set(names)]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit the guide: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    new_leaves = []
    for (_, leaf), name in zip(leaves, names, strict=True):
        value = np.asarray(tensors[name])
        if value.shape != leaf.shape:
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {value.shape}, the guide expects "
                f"{tuple(leaf.shape)}"
            )
        new_leaves.append(jnp.asarray(value, leaf.dtype))
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, new_leaves), static)


def write_checkpoint(path, tensors: dict[str, np.ndarray], card: dict):
    """Write ``tensors`` and ``card`` atomically as ``path.safetensors`` + ``path.json``."""
    weights, _ = checkpoint_paths(path)
    arrays = {k: np.array(v, order="C") for k, v in tensors.items()}  # keeps 0-d shapes
    atomic_write(weights, lambda tmp: save_file(arrays, tmp))
    return write_card(path, card)


def read_checkpoint(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read and verify a checkpoint (either backend's)."""
    weights, card = read_card(path)
    return _load_arrays(weights), card


def _load_arrays(weights) -> dict[str, np.ndarray]:
    try:
        return load_file(str(weights))
    except Exception as error:  # safetensors' own parse errors (a file that hashes right)
        raise CheckpointError(f"{weights} is not a valid safetensors file: {error}") from None


def save_guide(guide, params: dict, path, **card):
    """Save a built guide's weights (from NumPyro's ``params``) and its card."""
    refiner = guide.refiner(params)
    return write_checkpoint(path, refiner_tensors(refiner), new_guide_card(guide, refiner, **card))


def restore_guide(guide, checked: CheckedCheckpoint):
    """``(guide, params)``: ``guide``, built from ``checked.card["guide"]`` for the caller's
    model, checked against the card (model, layout) and the weights' header (the shapes of
    the guide the card describes, by ``eqx.filter_eval_shape``: nothing allocated) before
    the weights are read (and checked finite) and its parameters made."""
    path, card = checked.path, checked.card
    check_model_identity(guide, checked, biject_to)
    dims = (card["latent_dim"], card["feature_dim"])
    try:
        expected = _refiner_shapes(eqx.filter_eval_shape(guide.build, *dims))
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        message = str(error).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} has an invalid guide config: {message}") from None
    check_weight_shapes(expected, checked.shapes, str(path))
    arrays = _load_arrays(checked.weights)
    check_finite_weights(
        {name: bool(np.isfinite(value).all()) for name, value in arrays.items()}, str(path)
    )
    refiner = guide.build(*dims)
    guide.layout_signature = card["layout"]
    refiner = load_refiner(refiner, arrays, source=f"checkpoint {path}")
    guide.card = card
    return guide, guide.params_of(refiner)
