"""A Bernoulli likelihood on logits whose gradient is right at ``logits = 0``.

NumPyro 0.22's ``Bernoulli(logits=l).log_prob(y)`` computes
``−(max(l, 0) + log1p(e^{−|l|}) − y l)`` with ``jnp.clip`` and ``jnp.abs``, whose JAX
derivatives at ``l = 0`` are 1 and 0: the gradient there is ``1 − y`` instead of
``σ(0) − y = ½ − y`` (PyTorch had the same bug, fixed in pytorch/pytorch#2195 and #20679).
The guide's refinement takes gradients of the log joint at sigma points, and for an MLP
whose output weights sit at exactly zero (a freshly initialized guide's ``λ_0``) every
logit is exactly zero there: the JAX signal was off by ``½`` per data point.

:class:`BernoulliLogits` keeps NumPyro's class (support, sampling, enumeration) and
evaluates ``log σ(l)`` for ``y = 1`` and ``log σ(−l)`` for ``y = 0`` as
``−softplus(∓l)``, which is stable for any ``l`` (``±∞`` included) and has the exact
gradient everywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions.util import validate_sample

__all__ = ["BernoulliLogits"]


class BernoulliLogits(dist.BernoulliLogits):
    """``Bernoulli(σ(logits))`` with ``log p(y) = −softplus(−l)`` (``y = 1``) or
    ``−softplus(l)`` (``y = 0``)."""

    @validate_sample
    def log_prob(self, value):
        logits = self.logits
        return jnp.where(value == 1, -jax.nn.softplus(-logits), -jax.nn.softplus(logits))
