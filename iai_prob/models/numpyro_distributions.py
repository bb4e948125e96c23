"""NumPyro distributions the task families need beyond NumPyro's own.

* :class:`BernoulliLogits`: a Bernoulli likelihood on logits whose gradient is right at
  ``logits = 0``. NumPyro 0.22's ``Bernoulli(logits=l).log_prob(y)`` computes
  ``−(max(l, 0) + log1p(e^{−|l|}) − y l)`` with ``jnp.clip`` and ``jnp.abs``, whose JAX
  derivatives at ``l = 0`` are 1 and 0: the gradient there is ``1 − y`` instead of
  ``σ(0) − y = ½ − y`` (PyTorch had the same bug, fixed in pytorch/pytorch#2195 and
  #20679). The guide's refinement takes gradients of the log joint at sigma points, and
  for an MLP whose output weights sit at exactly zero (a freshly initialized guide's
  ``λ_0``) every logit is exactly zero there: the JAX signal was off by ``½`` per data
  point. It keeps NumPyro's class (support, sampling, enumeration) and evaluates
  ``log σ(l)`` for ``y = 1`` and ``log σ(−l)`` for ``y = 0`` as ``−softplus(∓l)``, which
  is stable for any ``l`` (``±∞`` included) and has the exact gradient everywhere.
* :class:`NormalInverseGamma`: the exact posterior of
  :class:`~iai_prob.models.linear_regression_unknown_noise.LinearRegressionUnknownNoise`
  (its PyTorch twin is in :mod:`iai_prob.models.pyro_distributions`: a distribution is a
  class of its framework).
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import gammaln
from numpyro.distributions import constraints
from numpyro.distributions.util import promote_shapes, validate_sample

from iai_prob.checks import check_loc_scale_tril

__all__ = ["BernoulliLogits", "NormalInverseGamma", "real_vector_positive_last"]


class BernoulliLogits(dist.BernoulliLogits):
    """``Bernoulli(σ(logits))`` with ``log p(y) = −softplus(−l)`` (``y = 1``) or
    ``−softplus(l)`` (``y = 0``)."""

    @validate_sample
    def log_prob(self, value):
        logits = self.logits
        return jnp.where(value == 1, -jax.nn.softplus(-logits), -jax.nn.softplus(logits))


class _RealVectorPositiveLast(constraints.ParameterFreeConstraint):
    """Real vectors whose last coordinate is positive: the support of ``(w, σ²)``."""

    event_dim = 1

    def __call__(self, x):
        return jnp.isfinite(x).all(-1) & (x[..., -1] > 0)

    def feasible_like(self, prototype):
        return jnp.ones_like(prototype)


real_vector_positive_last = _RealVectorPositiveLast()
"""The support of :class:`NormalInverseGamma`."""


class NormalInverseGamma(dist.Distribution):
    """Joint law of ``(w, σ²)`` with ``σ² ~ InvGamma(a, b)`` and ``w | σ² ~ N(m, σ² V)``.

    Values are the flattened vectors ``(w_1, …, w_d, σ²)`` of event shape ``(d + 1,)``.

    :param loc: mean ``m`` of ``w``, shape ``(..., d)``.
    :param scale_tril: lower Cholesky factor of ``V``, shape ``(..., d, d)``.
    :param concentration: shape ``a`` of the inverse gamma, shape ``(...)``.
    :param rate: scale ``b`` of the inverse gamma, shape ``(...)``.
    """

    arg_constraints: ClassVar[dict] = {
        "loc": constraints.real_vector,
        "scale_tril": constraints.lower_cholesky,
        "concentration": constraints.positive,
        "rate": constraints.positive,
    }
    support = real_vector_positive_last
    reparametrized_params: ClassVar[list[str]] = ["loc", "scale_tril", "concentration", "rate"]

    def __init__(self, loc, scale_tril, concentration, rate, *, validate_args=None):
        loc, scale_tril = jnp.asarray(loc), jnp.asarray(scale_tril)
        dim = check_loc_scale_tril(loc.shape, scale_tril.shape)
        concentration, rate = promote_shapes(jnp.asarray(concentration), jnp.asarray(rate))
        batch_shape = jnp.broadcast_shapes(
            loc.shape[:-1], scale_tril.shape[:-2], concentration.shape, rate.shape
        )
        self.loc = jnp.broadcast_to(loc, (*batch_shape, dim))
        self.scale_tril = jnp.broadcast_to(scale_tril, (*batch_shape, dim, dim))
        self.concentration = jnp.broadcast_to(concentration, batch_shape)
        self.rate = jnp.broadcast_to(rate, batch_shape)
        super().__init__(batch_shape, (dim + 1,), validate_args=validate_args)

    def _noise_mean(self):
        a, b = self.concentration, self.rate
        return jnp.where(a > 1, b / (a - 1), jnp.inf)

    @property
    def mean(self):
        return jnp.concatenate([self.loc, self._noise_mean()[..., None]], axis=-1)

    @property
    def variance(self):
        noise_mean = self._noise_mean()
        weight_var = (self.scale_tril**2).sum(-1) * noise_mean[..., None]
        noise_var = jnp.where(
            self.concentration > 2, noise_mean**2 / (self.concentration - 2), jnp.inf
        )
        return jnp.concatenate([weight_var, noise_var[..., None]], axis=-1)

    def sample(self, key, sample_shape=()):
        gamma_key, normal_key = jax.random.split(key)
        batch = tuple(sample_shape) + self.batch_shape
        gamma = jax.random.gamma(gamma_key, self.concentration, batch) / self.rate
        noise_var = 1.0 / jnp.maximum(gamma, jnp.finfo(gamma.dtype).tiny)
        eps = jax.random.normal(normal_key, (*batch, self.loc.shape[-1]))
        weights = (
            self.loc + jnp.sqrt(noise_var)[..., None] * (self.scale_tril @ eps[..., None])[..., 0]
        )
        return jnp.concatenate([weights, noise_var[..., None]], axis=-1)

    def log_prob(self, value):
        weights, noise_var = value[..., :-1], value[..., -1]
        a, b = self.concentration, self.rate
        diff = weights - self.loc
        scale_tril = jnp.broadcast_to(
            self.scale_tril, (*diff.shape[:-1], *self.scale_tril.shape[-2:])
        )
        z = solve_triangular(scale_tril, diff[..., None], lower=True)[..., 0]
        dim = diff.shape[-1]
        half_log_det = jnp.log(jnp.diagonal(self.scale_tril, axis1=-2, axis2=-1)).sum(-1)
        log_normal = (
            -0.5 * dim * (math.log(2 * math.pi) + jnp.log(noise_var))
            - half_log_det
            - 0.5 * (z**2).sum(-1) / noise_var
        )
        log_inv_gamma = a * jnp.log(b) - gammaln(a) - (a + 1) * jnp.log(noise_var) - b / noise_var
        return log_normal + log_inv_gamma
