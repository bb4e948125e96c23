"""The convention shared by task families without covariates.

Generative families (:class:`~iai_prob.models.beta_bernoulli.BetaBernoulli`,
:class:`~iai_prob.models.dirichlet_categorical.DirichletCategorical`,
:class:`~iai_prob.models.gaussian_mixture.GaussianMixture`) keep the protocol's
``model(x, y)`` signature: ``x`` is a zero-width covariate array of shape ``(N, 0)`` or
``(T, N, 0)`` that gives ``N`` (and ``T``) when ``y`` is ``None``; when ``x`` is ``None``
they come from ``y``. Their simulators return such an ``x``.
"""

from __future__ import annotations

import abc

from iai_prob.models.base import TaskFamily

__all__ = ["GenerativeTaskFamily"]


class GenerativeTaskFamily(TaskFamily):
    """A task family without covariates; ``x`` is a zero-width ``([T,] N, 0)`` tensor."""

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
        if x is not None and (x.ndim not in (2, 3) or x.shape[-1] != 0):
            raise ValueError(
                f"{name} has no covariates: expected x of shape (N, 0) or (T, N, 0), "
                f"got {tuple(x.shape)}"
            )
        if y is None:
            return
        shape = tuple(y.shape)
        points = shape[: len(shape) - len(obs)]
        if len(points) not in (1, 2) or shape[len(points) :] != obs:
            raise ValueError(
                f"{name} expects y of shape (N, *{obs}) or (T, N, *{obs}), got {shape}"
            )
        if x is not None and tuple(x.shape[:-1]) != points:
            raise ValueError(
                f"{name}: x of shape {tuple(x.shape)} does not match y of shape {shape}"
            )

    def _data_plates(self, x, y):
        """Return ``(tasks_context, num_points, like)``; ``like`` gives the data's float
        dtype and device (:meth:`~iai_prob.models.pyro_backend.PyroBackend.float_like`)."""
        x = None if x is None else self.ppl.asarray(x)
        y = None if y is None else self.ppl.asarray(y)
        self._check_data(x, y)
        if x is not None:
            tasks, num_points = self.plates(x, point_dims=1)
        else:
            tasks, num_points = self.plates(y, point_dims=len(self.observation_shape))
        return tasks, num_points, self.ppl.float_like(x, y)

    def _observations(self, x, y):
        """Validate ``y`` (and ``x`` if given) for the exact references; return ``y``."""
        if y is None:
            raise ValueError(f"{type(self).__name__}: the exact references need observations y")
        x = None if x is None else self.ppl.asarray(x)
        y = self.ppl.asarray(y)
        self._check_data(x, y)
        return y
