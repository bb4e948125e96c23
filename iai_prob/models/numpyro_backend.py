"""The NumPyro backend of the task families (see :mod:`iai_prob.models.backend`).

JAX arrays, NumPyro primitives, and draws that split a JAX PRNG key once per draw, so a
simulator runs unchanged inside ``jax.jit`` (the JAX training step simulates its tasks
inside the compiled step). Imports no torch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.linalg import cho_solve
from jax.scipy.special import gammaln
from numpyro.distributions import constraints
from numpyro.distributions.transforms import IndependentTransform, biject_to
from numpyro.ops.indexing import Vindex

from iai_prob.models.numpyro_distributions import BernoulliLogits, NormalInverseGamma

__all__ = ["BACKEND", "JaxDraws", "NumPyroBackend"]


def _float(value):
    return value.astype(jnp.result_type(float))


class JaxDraws:
    """A simulator's random draws from the PRNG ``key``, split once per draw."""

    def __init__(self, key):
        self._key = key

    def _next_key(self):
        self._key, key = jax.random.split(self._key)
        return key

    def normal(self, shape):
        """Standard normal draws of ``shape``."""
        return jax.random.normal(self._next_key(), tuple(shape))

    def gamma(self, concentration: float, shape):
        """``Gamma(concentration, 1)`` draws of ``shape``."""
        return jax.random.gamma(self._next_key(), concentration, tuple(shape))

    def beta(self, concentration1: float, concentration0: float, shape):
        """``Beta(concentration1, concentration0)`` draws of ``shape``."""
        return jax.random.beta(self._next_key(), concentration1, concentration0, tuple(shape))

    def dirichlet(self, concentration: float, shape):
        """Symmetric Dirichlet draws over the last dim of ``shape``."""
        alpha = jnp.full(shape[-1], concentration)
        return jax.random.dirichlet(self._next_key(), alpha, tuple(shape[:-1]))

    def bernoulli(self, probs, shape=None):
        """0/1 draws with ``probs`` (broadcast to ``shape`` when given), as floats."""
        return _float(jax.random.bernoulli(self._next_key(), probs, shape))

    def categorical(self, probs, num_draws: int):
        """``(T, num_draws)`` category indices from ``probs`` ``(T, K)``."""
        logits = jnp.log(probs)[:, None, :]
        return jax.random.categorical(self._next_key(), logits, shape=(probs.shape[0], num_draws))


class NumPyroBackend:
    """What the task families need from NumPyro and ``jax.numpy``."""

    name = "numpyro"
    dist = dist
    constraints = constraints
    biject_to = staticmethod(biject_to)
    IndependentTransform = IndependentTransform
    NormalInverseGamma = NormalInverseGamma
    sample = staticmethod(numpyro.sample)
    plate = staticmethod(numpyro.plate)
    Vindex = staticmethod(Vindex)
    einsum = staticmethod(jnp.einsum)
    cholesky = staticmethod(jnp.linalg.cholesky)
    solve = staticmethod(jnp.linalg.solve)
    lgamma = staticmethod(gammaln)
    sigmoid = staticmethod(jax.nn.sigmoid)
    tanh = staticmethod(jnp.tanh)
    sqrt = staticmethod(jnp.sqrt)
    log = staticmethod(jnp.log)
    arange = staticmethod(jnp.arange)
    asarray = staticmethod(jnp.asarray)

    @staticmethod
    def simulation_arguments(key, num_tasks: int, num_points: int):
        """``(draws, num_tasks, num_points)`` from ``family.sample``'s NumPyro arguments."""
        return JaxDraws(key), num_tasks, num_points

    @staticmethod
    def linear_predictor(x, weights):
        """``x_nᵀ w`` per point (XLA fuses the product and the sum)."""
        return (x * weights).sum(-1)

    @staticmethod
    def bernoulli_logits(logits):
        """``Bernoulli(σ(logits))`` with the exact gradient at ``logits = 0``."""
        return BernoulliLogits(logits)

    @staticmethod
    def constant(value: float, like):
        """The scalar ``value`` (NumPyro promotes it to the data's dtype)."""
        return value

    @staticmethod
    def full(shape, value: float, like):
        """An array of ``shape`` filled with ``value``."""
        return jnp.full(tuple(shape), value)

    @staticmethod
    def float_like(x, y):
        """Unused by NumPyro's constants (kept for the shared signature)."""
        return None

    @staticmethod
    def as_float(values, like):
        """``values`` as floats of the default float dtype."""
        return _float(values)

    @staticmethod
    def concatenate(parts, axis: int = -1):
        return jnp.concatenate([jnp.asarray(part) for part in parts], axis=axis)

    @staticmethod
    def eye(dim: int, like):
        """The ``dim × dim`` identity in ``like``'s dtype."""
        return jnp.eye(dim, dtype=jnp.result_type(like))

    @staticmethod
    def cholesky_solve(rhs, chol):
        """``A⁻¹ rhs`` for ``A = L Lᵀ`` given the lower factor ``chol``."""
        return cho_solve((chol, True), rhs)

    @staticmethod
    def inverse_from_cholesky(chol):
        """``A⁻¹`` from the lower Cholesky factor of ``A``."""
        eye = jnp.broadcast_to(jnp.eye(chol.shape[-1], dtype=chol.dtype), chol.shape)
        return cho_solve((chol, True), eye)

    @staticmethod
    def log_det_from_cholesky(chol):
        """``log det A`` from the lower Cholesky factor of ``A``."""
        return 2 * jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)

    @staticmethod
    def one_hot(values, num_classes: int, like):
        """One-hot rows of the integer-valued ``values``, as floats."""
        return jax.nn.one_hot(values.astype(jnp.int32), num_classes)

    @staticmethod
    def empty_covariates(num_tasks: int, num_points: int):
        """The zero-width ``(T, N, 0)`` covariates of a family without covariates."""
        return jnp.zeros((num_tasks, num_points, 0))

    @staticmethod
    def require(valid, message: str) -> None:
        """Raise ``ValueError(message)`` unless every entry of ``valid`` is true; under
        ``jit``/``vmap`` tracing the values are unknown and the check is skipped."""
        if isinstance(valid, jax.core.Tracer):
            return
        if not bool(jnp.all(valid)):
            raise ValueError(message)


BACKEND = NumPyroBackend()
"""The NumPyro backend object (what ``get_backend("numpyro")`` returns)."""
