"""The convention shared by task families without covariates.

Generative families (:class:`~iai_prob.models.beta_bernoulli.BetaBernoulli`,
:class:`~iai_prob.models.dirichlet_categorical.DirichletCategorical`,
:class:`~iai_prob.models.gaussian_mixture.GaussianMixture`) keep the protocol's
``model(x, y)`` signature: ``x`` is a zero-width covariate tensor of shape ``(N, 0)`` or
``(T, N, 0)`` that gives ``N`` (and ``T``) when ``y`` is ``None``; when ``x`` is ``None``
they come from ``y``. Their simulators return such an ``x``.
"""

from __future__ import annotations

import abc

import torch

from iai_prob.models.base import TaskFamily

__all__ = ["GenerativeTaskFamily"]


class GenerativeTaskFamily(TaskFamily):
    """A task family without covariates; ``x`` is a zero-width ``([T,] N, 0)`` tensor."""

    @property
    @abc.abstractmethod
    def observation_shape(self) -> tuple[int, ...]:
        """Shape of one observation ``y_n``."""

    def _check_data(self, x: torch.Tensor | None, y: torch.Tensor | None) -> None:
        """Raise a ``ValueError`` naming the shapes unless ``x`` and ``y`` fit together."""
        obs = tuple(self.observation_shape)
        if x is None and y is None:
            raise ValueError(
                f"{type(self).__name__}.model needs x (a zero-width tensor of shape (N, 0) or "
                f"(T, N, 0)) or y to know the number of points"
            )
        if x is not None and (x.dim() not in (2, 3) or x.shape[-1] != 0):
            raise ValueError(
                f"{type(self).__name__} has no covariates: expected x of shape (N, 0) or "
                f"(T, N, 0), got {tuple(x.shape)}"
            )
        if y is None:
            return
        points = tuple(y.shape[: y.dim() - len(obs)])
        if len(points) not in (1, 2) or tuple(y.shape[len(points) :]) != obs:
            raise ValueError(
                f"{type(self).__name__} expects y of shape (N, *{obs}) or (T, N, *{obs}), "
                f"got {tuple(y.shape)}"
            )
        if x is not None and tuple(x.shape[:-1]) != points:
            raise ValueError(
                f"{type(self).__name__}: x of shape {tuple(x.shape)} does not match "
                f"y of shape {tuple(y.shape)}"
            )

    def _data_plates(self, x: torch.Tensor | None, y: torch.Tensor | None):
        """Return ``(tasks_context, num_points, like)``; ``like`` gives float dtype and device."""
        self._check_data(x, y)
        if x is not None:
            tasks, num_points = self.plates(x, point_dims=1)
        else:
            tasks, num_points = self.plates(y, point_dims=len(self.observation_shape))
        return tasks, num_points, self._float_like(x, y)

    @staticmethod
    def _float_like(x: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor:
        """A tensor with the float dtype and device of the data (``x`` first, then ``y``)."""
        for tensor in (x, y):
            if tensor is not None and tensor.is_floating_point():
                return tensor
        return torch.empty((), device=(x if x is not None else y).device)

    def _observations(self, x: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        """Validate ``y`` (and ``x`` if given) for the exact references; return ``y``."""
        if y is None:
            raise ValueError(f"{type(self).__name__}: the exact references need observations y")
        self._check_data(x, y)
        return y

    @staticmethod
    def _no_covariates(num_tasks: int, num_points: int) -> torch.Tensor:
        return torch.empty(num_tasks, num_points, 0)
