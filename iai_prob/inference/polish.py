"""Semi-amortized polishing: stochastic VI started from an amortized posterior.

Kim, Wiseman, Miller, Sontag, Rush (ICML 2018), *Semi-Amortized Variational
Autoencoders*: the amortized posterior is the starting point of per-dataset SVI.
"""

from __future__ import annotations

import torch
from tqdm.auto import trange

from iai_prob.inference.objectives import elbo
from iai_prob.inference.posteriors import GaussianFamily, covariance_tril, get_posterior_family
from iai_prob.refinement_state import RefinementState

__all__ = ["polish"]


def polish(
    task,
    start: RefinementState,
    steps: int,
    *,
    learning_rate: float = 0.01,
    num_samples: int = 8,
    progress: bool = False,
    seed: int = 0,
) -> tuple[RefinementState, GaussianFamily]:
    """Optimize a full-rank Gaussian ``z = μ_K + L_K (a + B ε)`` over ``(a, B)`` with Adam.

    ``task`` is a prepared task (:meth:`IterativeAmortizedGuide.prepare`) and ``start`` the
    amortized state ``(μ_K, Λ_K)`` with ``L_K L_Kᵀ = Λ_K⁻¹``. Working in the frame of the
    amortized posterior (``a = 0, B = I`` at the start) makes the learning rate a fraction
    of a posterior standard deviation whatever ``N``. Returns the polished state only if a
    256-draw ELBO estimate prefers it to the start (else the start), with its family.
    """
    full_rank = get_posterior_family("full_rank", start.loc.shape[-1])
    frame = covariance_tril(start.precision)
    shift = torch.zeros_like(start.loc, requires_grad=True)
    factor = torch.eye(start.loc.shape[-1]).expand_as(frame).clone().requires_grad_(True)

    def polished() -> RefinementState:
        loc = start.loc + (frame @ shift.unsqueeze(-1)).squeeze(-1)
        return RefinementState(loc, torch.cholesky_inverse(frame @ factor.tril()))

    optimizer = torch.optim.Adam([shift, factor], lr=learning_rate)
    for _ in trange(steps, disable=not progress, desc="polish"):
        optimizer.zero_grad()
        loss = -elbo(polished(), full_rank, task.log_joint, task.data, num_samples=num_samples)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        candidates = [RefinementState(start.loc, start.precision), polished()]
        scores = [
            elbo(
                c,
                full_rank,
                task.log_joint,
                task.data,
                num_samples=256,
                generator=torch.Generator().manual_seed(seed),
            )
            for c in candidates
        ]
    return candidates[int(scores[1] > scores[0])], full_rank
