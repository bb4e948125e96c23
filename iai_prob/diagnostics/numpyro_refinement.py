"""ELBO (and exact KL) against the refinement step for a NumPyro guide.

The NumPyro twin of :func:`~iai_prob.diagnostics.refinement.refinement_curve`, reading the
trajectory ``λ_0 … λ_K`` of :meth:`iai_prob.numpyro.IterativeAmortizedGuide.refinement_trace`.
For every state the Monte Carlo ELBO

    ELBO(λ_k) = E_{q_{λ_k}} [ log p(z, D) − log q_{λ_k}(z) ] = log p(D) − KL(q_{λ_k} ‖ p(θ | D))

takes ``log p(z, D)`` from NumPyro (:class:`.numpyro_adapter.NumPyroPosterior`),
and, for a conjugate family, the KL to the exact Gaussian posterior ``N(m, S)`` is the
closed form

    KL(N(μ, Λ⁻¹) ‖ N(m, S)) = ½ [ tr(S⁻¹Λ⁻¹) + (m − μ)ᵀ S⁻¹ (m − μ) − D + log det S + log det Λ ].

Iterative Amortized Inference: Mittal, Mahajan, Lajoie, Pezeshki (2025), arXiv:2510.11471.
"""

from __future__ import annotations

import jax
import numpy as np

from iai_prob.diagnostics.curves import RefinementCurve
from iai_prob.diagnostics.numpyro_adapter import NumPyroPosterior

__all__ = ["gaussian_kl", "numpyro_refinement_curve"]


def gaussian_kl(loc, precision, exact_loc, exact_precision) -> np.ndarray:
    """``KL(N(loc, precision⁻¹) ‖ N(exact_loc, exact_precision⁻¹))`` per task, float64."""
    loc, precision = np.asarray(loc, float), np.asarray(precision, float)
    exact_loc, exact_precision = np.asarray(exact_loc, float), np.asarray(exact_precision, float)
    covariance = np.linalg.inv(precision)
    difference = exact_loc - loc
    trace = np.einsum("...ij,...ji->...", exact_precision, covariance)
    mahalanobis = np.einsum("...i,...ij,...j->...", difference, exact_precision, difference)
    log_det = np.linalg.slogdet(precision)[1] - np.linalg.slogdet(exact_precision)[1]
    return 0.5 * (trace + mahalanobis - loc.shape[-1] + log_det)


def numpyro_refinement_curve(
    guide, params, *args, num_steps=None, num_samples: int = 64, exact=None, seed: int = 0, **kwargs
) -> RefinementCurve:
    """ELBO and, where exact, KL after each refinement step of a NumPyro guide.

    :param guide: a NumPyro :class:`~iai_prob.numpyro.IterativeAmortizedGuide`.
    :param dict params: its NumPyro params dict.
    :param exact: ``None`` (the guide family's closed form when it has one), ``False``
        (no KL), or a NumPyro ``MultivariateNormal`` over the unconstrained latents.
    """
    if int(num_samples) != num_samples or num_samples < 2:
        raise ValueError(f"num_samples must be an integer ≥ 2, got {num_samples!r}")
    states, _ = guide.refinement_trace(params, *args, num_steps=num_steps, **kwargs)
    task = guide.prepare(*args, **kwargs)
    family = guide.family
    log_evidence = None
    if exact is None and family is not None and family.has_exact_posterior:
        exact = family.exact_posterior(*args)
        log_evidence = float(np.mean(np.asarray(family.log_evidence(*args))))
    posterior_family = guide.refiner_family()
    elbo, kl = [], []
    for state in states:
        q = posterior_family.distribution(state.loc, state.precision)  # batch (T,)
        source = NumPyroPosterior(q, task, guide.model, args, kwargs)
        draws = source.draw(num_samples, seed=seed)
        elbo.append(float(np.mean(draws.log_weights)))
        if exact is not None and exact is not False:
            exact_loc = np.reshape(np.asarray(exact.mean), (-1, state.loc.shape[-1]))
            exact_precision = np.reshape(
                np.asarray(exact.precision_matrix), (-1, *state.precision.shape[-2:])
            )
            kl.append(
                float(gaussian_kl(state.loc, state.precision, exact_loc, exact_precision).mean())
            )
    return RefinementCurve(
        steps=np.array([int(np.ravel(jax.device_get(s.step))[0]) for s in states]),
        elbo=np.array(elbo),
        kl=np.array(kl) if kl else None,
        log_evidence=log_evidence,
        points_seen=np.array([float(np.ravel(jax.device_get(s.points_seen))[0]) for s in states]),
    )
