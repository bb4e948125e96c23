"""The convergence phase's settings, shared by both backends (plain Python).

``IterativeAmortizedGuide(convergence=Convergence(...))`` (or ``guide.convergence = ...``)
sets how every default answer is finished (:mod:`iai_prob.inference.convergence`): its
cap on full-data steps, its tolerance, the chunk size of the full-data evaluations, the
draws of the PSIS ``k̂`` and the precision of the phase.
"""

from __future__ import annotations

from dataclasses import dataclass

from iai_prob.checks import check_positive, check_positive_int

__all__ = ["DEFAULT_CONVERGENCE", "Convergence"]


@dataclass(frozen=True)
class Convergence:
    """Settings of the convergence phase (``IterativeAmortizedGuide(convergence=...)``).

    :param int max_steps: at most this many full-data steps per dataset (each reads the
        data about twice); ``0`` checks convergence without moving.
    :param float tolerance: converged when the full-data step's residual
        ``KL(q_target ‖ q)`` is below this many nats.
    :param int chunk_size: the full data is evaluated this many points at a time.
    :param int khat_draws: draws from ``q`` for the PSIS ``k̂`` of the answer (``≥ 100``).
    :param bool refine_first: run the guide's learned mini-batch refinement (one pass)
        before the phase, as ``refine(x, y, passes=P)`` and streams always do. Off by
        default: the phase starts from the better of the encoder's ``λ_0`` and the
        Laplace point, and its fixed point does not depend on the start; measured on the
        shipped logistic and linear regression guides at N = 1,024, the same answer
        2.6x faster.
    :param bool float64: run the phase (data, state, log joint) in float64. Raw units make
        the posterior precision ill-conditioned (covariates near 300 with sd 50 give a
        condition number near 10⁶), where float32 Cholesky factors and KLs lose the
        digits the convergence test needs; the answer is returned in the guide's dtype.
    :param bool moment_match: where the answer's ``0.5 < k̂ ≤ 0.7`` (the VI optimum usable
        but not close), return the Gaussian with the PSIS-weighted mean and covariance of
        the ``k̂`` draws when they differ from the VI optimum by more than their Monte
        Carlo error and its own ``k̂`` is at most 0.7 (:mod:`iai_prob.moment_matching`;
        full-rank family only): closer to the posterior where its tails are heavier than
        a Gaussian's (robust Student-t regression: C2ST against NUTS 0.57 → 0.54).
    """

    max_steps: int = 30
    tolerance: float = 1e-3
    chunk_size: int = 16_384
    khat_draws: int = 1000
    refine_first: bool = False
    float64: bool = True
    moment_match: bool = True

    def __post_init__(self):
        if int(self.max_steps) != self.max_steps or self.max_steps < 0:
            raise ValueError(f"max_steps must be a non-negative integer, got {self.max_steps!r}")
        check_positive("tolerance", self.tolerance)
        check_positive_int("chunk_size", self.chunk_size)
        check_positive_int("khat_draws", self.khat_draws)
        if self.khat_draws < 100:
            raise ValueError(
                f"khat_draws must be at least 100 for a Pareto fit, got {self.khat_draws}"
            )


DEFAULT_CONVERGENCE = Convergence()
"""The guide's default: 30 full-data steps at most, converged below 1e-3 nats."""
