"""PyTorch distributions the task families need beyond Pyro's own.

:class:`NormalInverseGamma` is the exact posterior of
:class:`~iai_prob.models.linear_regression_unknown_noise.LinearRegressionUnknownNoise`
(its NumPyro twin is in :mod:`iai_prob.models.numpyro_distributions`: a distribution is
a class of its framework).
"""

from __future__ import annotations

import math
from typing import ClassVar

import pyro.distributions as dist
import torch
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all

from iai_prob.checks import check_loc_scale_tril

__all__ = ["NormalInverseGamma", "real_vector_positive_last"]


class _RealVectorPositiveLast(constraints.Constraint):
    """Real vectors whose last coordinate is positive: the support of ``(w, σ²)``."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(value).all(-1) & (value[..., -1] > 0)


real_vector_positive_last = _RealVectorPositiveLast()
"""The support of :class:`NormalInverseGamma`."""


class NormalInverseGamma(dist.TorchDistribution):
    """Joint law of ``(w, σ²)`` with ``σ² ~ InvGamma(a, b)`` and ``w | σ² ~ N(m, σ² V)``.

    Values are the flattened vectors ``(w_1, …, w_d, σ²)`` of event shape ``(d + 1,)``.

    :param torch.Tensor loc: mean ``m`` of ``w``, shape ``(..., d)``.
    :param torch.Tensor scale_tril: lower Cholesky factor of ``V``, shape ``(..., d, d)``.
    :param torch.Tensor concentration: shape ``a`` of the inverse gamma, shape ``(...)``.
    :param torch.Tensor rate: scale ``b`` of the inverse gamma, shape ``(...)``.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real_vector,
        "scale_tril": constraints.lower_cholesky,
        "concentration": constraints.positive,
        "rate": constraints.positive,
    }
    support = real_vector_positive_last
    has_rsample = True

    def __init__(self, loc, scale_tril, concentration, rate, validate_args=None):
        dim = check_loc_scale_tril(loc.shape, scale_tril.shape)
        concentration, rate = broadcast_all(concentration, rate)
        batch_shape = torch.broadcast_shapes(
            loc.shape[:-1], scale_tril.shape[:-2], concentration.shape
        )
        self.loc = loc.expand(*batch_shape, dim)
        self.scale_tril = scale_tril.expand(*batch_shape, dim, dim)
        self.concentration = concentration.expand(batch_shape)
        self.rate = rate.expand(batch_shape)
        super().__init__(batch_shape, torch.Size([dim + 1]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(NormalInverseGamma, _instance)
        batch_shape = torch.Size(batch_shape)
        dim = self.loc.shape[-1]
        new.loc = self.loc.expand(*batch_shape, dim)
        new.scale_tril = self.scale_tril.expand(*batch_shape, dim, dim)
        new.concentration = self.concentration.expand(batch_shape)
        new.rate = self.rate.expand(batch_shape)
        super(NormalInverseGamma, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        a, b = self.concentration, self.rate
        noise_mean = torch.where(a > 1, b / (a - 1), torch.full_like(b, math.inf))
        return torch.cat([self.loc, noise_mean.unsqueeze(-1)], dim=-1)

    @property
    def variance(self) -> torch.Tensor:
        a, b = self.concentration, self.rate
        inf = torch.full_like(b, math.inf)
        noise_mean = torch.where(a > 1, b / (a - 1), inf)
        weight_var = self.scale_tril.pow(2).sum(-1) * noise_mean.unsqueeze(-1)
        noise_var = torch.where(a > 2, noise_mean**2 / (a - 2), inf)
        return torch.cat([weight_var, noise_var.unsqueeze(-1)], dim=-1)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        batch = shape[:-1]
        gamma = torch._standard_gamma(self.concentration.expand(batch)) / self.rate.expand(batch)
        gamma = gamma.clamp(min=torch.finfo(gamma.dtype).tiny)
        noise_var = gamma.reciprocal()
        eps = torch.randn(*batch, shape[-1] - 1, dtype=self.loc.dtype, device=self.loc.device)
        weights = self.loc + noise_var.sqrt().unsqueeze(-1) * (
            self.scale_tril @ eps.unsqueeze(-1)
        ).squeeze(-1)
        return torch.cat([weights, noise_var.unsqueeze(-1)], dim=-1)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        weights, noise_var = value[..., :-1], value[..., -1]
        a, b = self.concentration, self.rate
        diff = weights - self.loc
        scale_tril = self.scale_tril.expand(*diff.shape[:-1], *self.scale_tril.shape[-2:])
        z = torch.linalg.solve_triangular(scale_tril, diff.unsqueeze(-1), upper=False).squeeze(-1)
        dim = diff.shape[-1]
        half_log_det = self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_normal = (
            -0.5 * dim * (math.log(2 * math.pi) + noise_var.log())
            - half_log_det
            - 0.5 * z.pow(2).sum(-1) / noise_var
        )
        log_inv_gamma = a * b.log() - torch.lgamma(a) - (a + 1) * noise_var.log() - b / noise_var
        return log_normal + log_inv_gamma
