"""The convention shared by task families without covariates (twin of
:mod:`iai_prob.models.generative`).

Generative families (:class:`~iai_prob.numpyro.models.beta_bernoulli.BetaBernoulli`,
:class:`~iai_prob.numpyro.models.dirichlet_categorical.DirichletCategorical`,
:class:`~iai_prob.numpyro.models.gaussian_mixture.GaussianMixture`) keep the protocol's
``model(x, y)`` signature: ``x`` is a zero-width array of shape ``(N, 0)`` or
``(T, N, 0)`` that gives ``N`` (and ``T``) when ``y`` is ``None``; when ``x`` is ``None``
they come from ``y``. Their simulators return such an ``x``.
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp

from iai_prob.numpyro.models.base import TaskFamily

__all__ = ["GenerativeTaskFamily", "check_values"]


def check_values(valid, message: str) -> None:
    """Raise ``ValueError(message)`` unless every entry of ``valid`` is true.

    Only concrete arrays are checked: under ``jit``/``vmap`` tracing the values are not
    known, and the exact references are then computed without the check.
    """
    if isinstance(valid, jax.core.Tracer):
        return
    if not bool(jnp.all(valid)):
        raise ValueError(message)


class GenerativeTaskFamily(TaskFamily):
    """A task family without covariates; ``x`` is a zero-width ``([T,] N, 0)`` array."""

    @property
    @abc.abstractmethod
    def observation_shape(self) -> tuple[int, ...]:
        """Shape of one observation ``y_n``."""

    def _check_data(self, x, y) -> None:
        """Raise a ``ValueError`` naming the shapes unless ``x`` and ``y`` fit together."""
        obs = tuple(self.observation_shape)
        name = type(self).__name__
        if x is None and y is None:
            raise ValueError(
                f"{name}.model needs x (a zero-width array of shape (N, 0) or (T, N, 0)) "
                "or y to know the number of points"
            )
        if x is not None and (jnp.ndim(x) not in (2, 3) or jnp.shape(x)[-1] != 0):
            raise ValueError(
                f"{name} has no covariates: expected x of shape (N, 0) or (T, N, 0), "
                f"got {tuple(jnp.shape(x))}"
            )
        if y is None:
            return
        shape = tuple(jnp.shape(y))
        points = shape[: len(shape) - len(obs)]
        if len(points) not in (1, 2) or shape[len(points) :] != obs:
            raise ValueError(
                f"{name} expects y of shape (N, *{obs}) or (T, N, *{obs}), got {shape}"
            )
        if x is not None and tuple(jnp.shape(x))[:-1] != points:
            raise ValueError(
                f"{name}: x of shape {tuple(jnp.shape(x))} does not match y of shape {shape}"
            )

    def _data_plates(self, x, y):
        """``(tasks_context, num_points)`` from ``x`` if given, else from ``y``."""
        self._check_data(x, y)
        if x is not None:
            return self.plates(jnp.asarray(x), point_dims=1)
        return self.plates(jnp.asarray(y), point_dims=len(self.observation_shape))

    def _observations(self, x, y):
        """Validate ``y`` (and ``x`` if given) for the exact references; return ``y``."""
        if y is None:
            raise ValueError(f"{type(self).__name__}: the exact references need observations y")
        self._check_data(x, y)
        return jnp.asarray(y)

    @staticmethod
    def _no_covariates(num_tasks: int, num_points: int):
        return jnp.zeros((num_tasks, num_points, 0))
