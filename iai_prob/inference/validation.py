"""Checks on what a user hands the guide, so that bad input fails early and by name.

The guide reads a dataset by tracing the user's model on the user's arguments
(:mod:`iai_prob.inference.task_data`). When that trace fails deep inside PyTorch
(a broadcasting error for a covariate of the wrong width, a sampler that has no
integer kernel, Pyro refusing a plate of size zero), the raw message names neither
the argument nor the fix. :func:`trace_model` checks the arguments first and turns
such failures into a ``ValueError`` that lists each argument's name, dtype and shape.

Two model mistakes are refused while the trace runs or right after it, because the
guide would otherwise answer for another model than the one written:

* an improper prior (``ImproperUniform``, or parameters that make a draw NaN or inf, such
  as ``Uniform(-inf, inf)``): the guide scores and samples the prior, so it must be a
  proper distribution;
* a batch dim that no plate declares (:func:`check_plate_shapes`): observations of shape
  ``(N, 1)`` where ``(N,)`` is expected broadcast to ``(N, N)`` and would be scored ``N``
  times each, a batch of tasks ``(T, N, …)`` given to a model without the tasks plate
  would be pooled into one dataset, and a vector latent without ``.to_event(1)`` would
  be read as a scalar. This is Pyro's own rule (``pyro.util.check_site_shape``), applied
  to every dim, since the traces read here carry no particle or enumeration dims.

The table of refused inputs is ``docs/reliability.md``.
"""

from __future__ import annotations

import contextlib
import inspect

import pyro
import torch
from pyro import poutine
from pyro.distributions import ImproperUniform
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

__all__ = [
    "RefuseImproperPriors",
    "check_log_prob",
    "check_plate_shapes",
    "describe_arguments",
    "explained_failures",
    "trace_model",
]

# Failures of a model's own tensor code (not the model's deliberate ValueErrors).
_TENSOR_FAILURES = (RuntimeError, TypeError, NotImplementedError, IndexError)
# Pyro appends the trace's shapes to an error raised inside a trace, on further lines.
_TRACE_SHAPES = "Trace Shapes:"
_PLATE_MISMATCH = "Shape mismatch inside plate"
_TASKS_PLATE_HINT = (
    "a batch of tasks (arguments of shape (T, N, ...), as fit and PriorPredictiveTasks pass) "
    "needs the globals and the data plate inside pyro.plate('tasks', T, dim=-2), with the "
    "data plate sized from the point axis"
)


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
        raise ValueError(
            f"the model failed on the data it was given ({type(error).__name__}: "
            f"{_first_line(error)}). Arguments: {describe_arguments(model, args, kwargs)}. "
            "Check each covariate's feature dimension, that observations have one entry per "
            "data point, and that covariates and non-categorical observations are "
            "floating-point tensors."
        ) from error
    except ValueError as error:
        message, shapes, _ = str(error).partition(_TRACE_SHAPES)
        if not shapes:  # raised outside a trace: kept as it is
            raise
        message = message.strip()
        if message.startswith(_PLATE_MISMATCH):  # Pyro's plate check names no argument
            raise ValueError(
                f"{message.rstrip('.')}. Arguments: {describe_arguments(model, args, kwargs)}. "
                f"Each plate's size must match the data's dims; {_TASKS_PLATE_HINT}."
            ) from error
        # the model's own message (or this module's), without the shapes Pyro appended
        try:
            stripped = type(error)(message)
        except TypeError:
            stripped = ValueError(message)
        raise stripped from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


def _innermost(fn):
    """The distribution under ``Independent``, ``MaskedDistribution`` and other wrappers."""
    while getattr(fn, "base_dist", None) is not None:
        fn = fn.base_dist
    return fn


class RefuseImproperPriors(Messenger):
    """Refuse a latent site whose prior is improper, naming it, while the model runs.

    ``ImproperUniform`` cannot be sampled (PyTorch would raise a ``NotImplementedError``
    that names neither the site nor the fix); a prior whose draw is NaN or inf (e.g.
    ``Uniform(-inf, inf)``, ``Normal(0, inf)``) has no finite density to refine against.
    :func:`trace_model` and :class:`~iai_prob.inference.PriorPredictiveTasks` trace the
    model under it, so both say the same.
    """

    @staticmethod
    def _is_latent(msg) -> bool:
        return msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg)

    def _process_message(self, msg):
        if self._is_latent(msg) and isinstance(_innermost(msg["fn"]), ImproperUniform):
            raise ValueError(
                f"latent site {msg['name']!r} has an improper prior (ImproperUniform); the "
                f"guide samples and scores the prior, so give {msg['name']!r} a proper "
                "distribution (e.g. dist.Normal(0, 10))"
            )

    def _postprocess_message(self, msg):
        value = msg["value"]
        if (
            self._is_latent(msg)
            and torch.is_tensor(value)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ):
            raise ValueError(
                f"latent site {msg['name']!r}: a draw from its prior {msg['fn']} is NaN or "
                "inf, so the prior is improper or has non-finite parameters (e.g. "
                "Uniform(-inf, inf), Normal(0, inf)); give it a proper prior with finite "
                "parameters"
            )


def trace_model(model, args: tuple, kwargs: dict):
    """One blocked trace of ``model(*args, **kwargs)`` under :func:`explained_failures`,
    refusing improper priors by site name."""
    with explained_failures(model, args, kwargs), poutine.block():
        return poutine.trace(RefuseImproperPriors()(model)).get_trace(*args, **kwargs)


def _batch_shape(site) -> tuple[int, ...] | None:
    """The batch shape of a site's value and distribution together (``None`` if they do
    not broadcast; :mod:`.task_data` names that mistake for observed sites)."""
    fn, value = site["fn"], site["value"]
    event_dim = len(fn.event_shape)
    value_batch = tuple(value.shape[: value.dim() - event_dim]) if torch.is_tensor(value) else ()
    try:
        return tuple(torch.broadcast_shapes(tuple(fn.batch_shape), value_batch))
    except RuntimeError:
        return None


def _plate_shape_hint(site, dim: int, tasks_plate: str, data_plate: str, plates: dict) -> str:
    fn, value = site["fn"], site["value"]
    expected = tuple(fn.batch_shape) + tuple(fn.event_shape)
    if torch.is_tensor(value) and site["is_observed"] and tuple(value.shape) != expected:
        return (
            f"its value of shape {tuple(value.shape)} broadcasts against its distribution's "
            f"shape {expected}: pass {site['name']!r} of shape {expected}"
        )
    in_data = any(frame.name == data_plate for frame in site["cond_indep_stack"])
    if tasks_plate not in plates and data_plate in plates and dim < plates[data_plate].dim:
        return _TASKS_PLATE_HINT
    if not in_data and not site["is_observed"]:
        return (
            "declare the dim with a plate, or make it part of the latent's event with "
            f".to_event({len(fn.batch_shape)})"
        )
    return "declare the dim with a plate (pyro.plate) or make it part of the event (.to_event)"


def check_plate_shapes(trace, *, data_plate: str = "data", tasks_plate: str = "tasks") -> None:
    """Refuse a sample site with a batch dim that no plate declares (see the module
    docstring): a dim of size > 1 outside its site's plates, or any dim left of the
    model's deepest plate, which the guide's particle dim would take.

    :raises ValueError: naming the site, its batch shape, the dim and what to change.
    """
    plates = {}
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            for frame in site["cond_indep_stack"]:
                plates[frame.name] = frame
    nesting = max((-frame.dim for frame in plates.values()), default=0)
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        batch_shape = _batch_shape(site)
        if batch_shape is None:
            continue
        declared = {frame.dim for frame in site["cond_indep_stack"]}
        for dim in range(-len(batch_shape), 0):
            size = batch_shape[dim]
            if dim in declared or (size == 1 and -dim <= nesting):
                continue
            names = [f"{frame.name} (dim {frame.dim})" for frame in site["cond_indep_stack"]]
            hint = _plate_shape_hint(site, dim, tasks_plate, data_plate, plates)
            raise ValueError(
                f"site {name!r} has batch shape {batch_shape}, but no plate declares its dim "
                f"{dim} (size {size}); its plates: {names or 'none'}. To fix: {hint}"
            )


def check_log_prob(trace, model, args: tuple, kwargs: dict) -> None:
    """Evaluate the trace's log-probabilities as the log joint will (validation off), so
    data the likelihood cannot score (e.g. integer Bernoulli observations) fail here, by
    name, rather than inside a refinement step."""
    with explained_failures(model, args, kwargs), pyro.validation_enabled(False):
        trace.compute_log_prob()
