"""Checks on what a user hands the guide, so that bad input fails early and by name.

The guide reads a dataset by tracing the user's model on the user's arguments
(:mod:`iai_prob.inference.task_data`). When that trace fails deep inside PyTorch
(a broadcasting error for a covariate of the wrong width, a sampler that has no
integer kernel, Pyro refusing a plate of size zero), the raw message names neither
the argument nor the fix. :func:`trace_model` checks the arguments first and turns
such failures into a ``ValueError`` that lists each argument's name, dtype and shape.
The table of refused inputs is ``docs/reliability.md``.
"""

from __future__ import annotations

import contextlib
import inspect

import pyro
import torch
from pyro import poutine

__all__ = [
    "check_log_prob",
    "describe_arguments",
    "explained_failures",
    "layout_difference",
    "trace_model",
]

# Failures of a model's own tensor code (not the model's deliberate ValueErrors).
_TENSOR_FAILURES = (RuntimeError, TypeError, NotImplementedError, IndexError)


def _argument_names(model, args: tuple) -> list[str]:
    try:
        parameters = list(inspect.signature(model).parameters)
    except (TypeError, ValueError):
        parameters = []
    return [parameters[i] if i < len(parameters) else f"args[{i}]" for i in range(len(args))]


def _describe(value) -> str:
    if torch.is_tensor(value):
        dtype = str(value.dtype).replace("torch.", "")
        return f"{dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def describe_arguments(model, args: tuple, kwargs: dict) -> str:
    """``"x: float32 tensor of shape (10, 2), y: ..."`` for an error message."""
    named = list(zip(_argument_names(model, args), args, strict=True)) + list(kwargs.items())
    return ", ".join(f"{name}: {_describe(value)}" for name, value in named) or "no arguments"


def _check_arguments(model, args: tuple, kwargs: dict) -> None:
    named = list(zip(_argument_names(model, args), args, strict=True)) + list(kwargs.items())
    for name, value in named:
        if torch.is_tensor(value) or value is None:
            continue
        if hasattr(value, "__array__") and hasattr(value, "shape"):
            raise ValueError(
                f"argument {name!r} is a {type(value).__module__}.{type(value).__name__}; the "
                f"guide takes torch tensors: pass torch.as_tensor({name}, dtype=torch.float32)"
            )
    for name, value in named:
        if not torch.is_tensor(value) or value.dim() == 0:
            continue
        if value.shape[0] == 0:
            raise ValueError(
                f"argument {name!r} is empty (shape {tuple(value.shape)}): a dataset needs at "
                "least one data point"
            )
        if value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise ValueError(
                    f"argument {name!r} contains {bad} NaN or inf value(s); the data contain "
                    "NaN or inf values: clean, impute or mask them first"
                )


@contextlib.contextmanager
def explained_failures(model, args: tuple, kwargs: dict):
    """Check ``args``/``kwargs`` and re-raise tensor failures in the block as ``ValueError``.

    :raises ValueError: naming the argument for array-likes that are not tensors and
        empty datasets, and listing every argument's dtype and shape when the model's
        own tensor code fails on them (wrong feature width, integer covariates, …).
    """
    _check_arguments(model, args, kwargs)
    try:
        yield
    except ZeroDivisionError as error:  # Pyro refuses plates of size zero
        raise ValueError(
            f"a plate of the model has size 0 ({error}): the dataset is empty. Arguments: "
            f"{describe_arguments(model, args, kwargs)}"
        ) from error
    except _TENSOR_FAILURES as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"the model failed on the data it was given ({type(error).__name__}: {first_line}). "
            f"Arguments: {describe_arguments(model, args, kwargs)}. Check each covariate's "
            "feature dimension, that observations have one entry per data point, and that "
            "covariates and non-categorical observations are floating-point tensors."
        ) from error


def trace_model(model, args: tuple, kwargs: dict):
    """One blocked trace of ``model(*args, **kwargs)`` under :func:`explained_failures`."""
    with explained_failures(model, args, kwargs), poutine.block():
        return poutine.trace(model).get_trace(*args, **kwargs)


def check_log_prob(trace, model, args: tuple, kwargs: dict) -> None:
    """Evaluate the trace's log-probabilities as the log joint will (validation off), so
    data the likelihood cannot score (e.g. integer Bernoulli observations) fail here, by
    name, rather than inside a refinement step."""
    with explained_failures(model, args, kwargs), pyro.validation_enabled(False):
        trace.compute_log_prob()


def layout_difference(expected: list, found: list) -> str:
    """Say how two latent-layout signatures (``[[name, shape], …]``) differ."""
    expected_sites, found_sites = dict(map(tuple, expected)), dict(map(tuple, found))
    parts = []
    missing = [name for name in expected_sites if name not in found_sites]
    unexpected = [name for name in found_sites if name not in expected_sites]
    if missing:
        parts.append(f"missing site(s) {missing}")
    if unexpected:
        parts.append(f"unexpected site(s) {unexpected}")
    for name, shape in expected_sites.items():
        if name in found_sites and list(found_sites[name]) != list(shape):
            parts.append(f"site {name!r} has shape {list(found_sites[name])}, expected {shape}")
    if not parts and list(expected_sites) != list(found_sites):
        parts.append(f"sites in order {list(found_sites)}, expected {list(expected_sites)}")
    return "; ".join(parts)
