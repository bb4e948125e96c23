"""Per-step training objectives of a Gaussian state, in JAX (twin of
:mod:`iai_prob.inference.objectives`).

* reverse KL: ``−ELBO(q) = −E_q[log p(z, D)] − H(q)`` with reparameterized draws
  ``z = μ + L ε`` (``L Lᵀ = Λ⁻¹``), averaged over tasks;
* forward KL: ``−log q(z_true)`` on simulated tasks (Mittal et al. 2025b, §3);
* ``kl_to_exact``: ``KL(q ‖ p(z | D))`` against a Gaussian exact posterior.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from iai_prob.fit_options import OBJECTIVES  # the names, defined once for both backends
from iai_prob.numpyro.posteriors import covariance_tril, gaussian_entropy, gaussian_kl

__all__ = ["OBJECTIVES", "elbo", "forward_kl", "kl_to_exact", "reverse_kl", "task_losses"]


def _task_elbos(loc, precision, log_joint, data, key, num_samples: int):
    """Monte Carlo ELBO of each task, ``(T,)`` (differentiable in the state)."""
    noise = jax.random.normal(key, (num_samples, *loc.shape), loc.dtype)
    z = loc + (covariance_tril(precision) @ noise[..., None])[..., 0]
    return log_joint.per_task_mean(z, data) + gaussian_entropy(precision)


def _task_log_q(loc, precision, true_z):
    """``log q(z_true)`` of each task, ``(T,)``."""
    dim = loc.shape[-1]
    delta = true_z - loc
    quadratic = (delta * (precision @ delta[..., None])[..., 0]).sum(-1)
    half_logdet = jnp.log(jnp.diagonal(jnp.linalg.cholesky(precision), axis1=-2, axis2=-1)).sum(-1)
    return half_logdet - 0.5 * quadratic - 0.5 * dim * np.log(2 * np.pi)


def elbo(loc, precision, log_joint, data, key, *, num_samples: int = 8):
    """Monte Carlo ELBO summed over tasks (differentiable in the state)."""
    return _task_elbos(loc, precision, log_joint, data, key, num_samples).sum()


def reverse_kl(loc, precision, log_joint, data, key, *, num_samples: int = 8):
    """``−ELBO`` averaged over tasks (``KL(q ‖ p)`` up to ``log p(D)``)."""
    return -_task_elbos(loc, precision, log_joint, data, key, num_samples).mean()


def forward_kl(loc, precision, true_z):
    """``−log q(z_true)`` averaged over tasks; ``true_z`` is ``(T, D)`` unconstrained."""
    return -_task_log_q(loc, precision, true_z).mean()


def task_losses(objective: str, loc, precision, log_joint, data, key, true_z, *, num_samples=8):
    """The loss ``objective`` of each task, ``(T,)`` (the twin of
    :func:`iai_prob.inference.objectives.task_losses`)."""
    loss = 0.0
    if objective in ("reverse_kl", "mixed"):
        loss = loss - _task_elbos(loc, precision, log_joint, data, key, num_samples)
    if objective in ("forward_kl", "mixed"):
        loss = loss - _task_log_q(loc, precision, true_z)
    return loss


def kl_to_exact(loc, precision, exact):
    """``KL(q ‖ p)`` per task for a NumPyro ``MultivariateNormal`` ``exact`` over ``z``."""
    return gaussian_kl(loc, precision, exact.loc, exact.precision_matrix)
