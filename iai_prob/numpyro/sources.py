"""Meta-training tasks from any NumPyro model's prior predictive (twin of
:class:`iai_prob.inference.sources.PriorPredictiveTasks`).

:func:`iai_prob.numpyro.fit` draws every step's tasks inside one jitted function from
``tasks.sample(key, num_tasks, num_points) -> (theta, x, y)``. The task families of
:mod:`iai_prob.models` (bound with ``on("numpyro")``) do so with their own simulators;
:class:`PriorPredictiveTasks` does it for a user's model ``model(x, y=None)``: draw the
covariates ``x`` with the user's sampler, run the model once on the batch (its globals in
the ``"tasks"`` plate at ``dim=-2``, as the families'), and read ``θ`` (the sample sites
outside the data plate) and ``y`` (the observed site) from the trace, so
``θ, D ~ p(θ) p(D | θ, x)``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from numpyro import handlers

from iai_prob.checks import check_positive_int

__all__ = ["PriorPredictiveTasks"]


class PriorPredictiveTasks:
    """Tasks from a NumPyro model's prior predictive.

    :param model: ``model(x, y=None)``; for a batch ``x`` of shape ``(T, N, …)`` its global
        sites lie in ``numpyro.plate("tasks", T, dim=-2)`` and the points in the data plate
        at ``dim=-1``.
    :param covariates: ``covariates(key, num_tasks, num_points) -> x`` of shape
        ``(T, N, …)`` (a zero-width ``(T, N, 0)`` array for a model without covariates);
        traceable by JAX.
    :param str observed: the observed site inside the data plate.
    :param str data_plate: the name of the data plate.
    """

    has_exact_posterior = False

    def __init__(
        self, model, covariates: Callable, *, observed: str = "y", data_plate: str = "data"
    ):
        if not callable(model) or not callable(covariates):
            raise ValueError(
                "PriorPredictiveTasks needs a model and a covariate sampler "
                "covariates(key, num_tasks, num_points) -> x, both callable"
            )
        self.model = model
        self.covariates = covariates
        self.observed = observed
        self.data_plate = data_plate

    def sample(self, key, num_tasks: int, num_points: int):
        """``(theta, x, y)``: ``theta[name]`` of shape ``(T, *event)``, ``x`` and ``y``
        of shapes ``(T, N, …)``."""
        num_tasks = check_positive_int("num_tasks", num_tasks)
        num_points = check_positive_int("num_points", num_points)
        x_key, model_key = jax.random.split(key)
        x = self.covariates(x_key, num_tasks, num_points)
        if jnp.ndim(x) < 2 or jnp.shape(x)[:2] != (num_tasks, num_points):
            raise ValueError(
                f"covariates(key, {num_tasks}, {num_points}) must return x of shape "
                f"({num_tasks}, {num_points}, ...), got {tuple(jnp.shape(x))}"
            )
        trace = handlers.trace(handlers.seed(self.model, model_key)).get_trace(x)
        if self.observed not in trace:
            raise ValueError(
                f"the model has no site named {self.observed!r} to observe; sites: {list(trace)}"
            )
        theta = {}
        for name, site in trace.items():
            if site["type"] != "sample" or name == self.observed:
                continue
            if all(frame.name != self.data_plate for frame in site["cond_indep_stack"]):
                event_shape = tuple(site["fn"].event_shape)
                theta[name] = jnp.reshape(site["value"], (num_tasks, *event_shape))
        return theta, x, trace[self.observed]["value"]

    def __repr__(self) -> str:
        return f"PriorPredictiveTasks({getattr(self.model, '__qualname__', self.model)!r})"
