"""Update rules: how a refinement step moves the Gaussian state toward its target.

:class:`NaturalGradientUpdate` is a damped stochastic natural-gradient step in the
natural parameters (conjugate-computation VI, Khan & Lin 2017):

    Λ_{k+1} = (1 − ρ_k) Λ_k + ρ_k Λ̂_k,      η_{k+1} = (1 − ρ_k) η_k + ρ_k η̂_k,

a convex combination, so ``Λ`` stays positive definite, and a fixed point is a
stationary point of the ELBO, so more steps or more data cannot push the answer away.
The step size is learned around the Robbins–Monro schedule,

    ρ_k = σ( log|B_k| − log(n_k + w |B_k|) + δ_φ(u_k) ),

where ``n_k`` is the number of points consumed before step ``k``, ``w > 0`` (learned,
initially ``0.01``) is the weight of the initial state in units of mini-batches (the
initial state serves mostly as the first linearization point), and ``δ_φ``
(initially 0) reads the step's context ``u_k`` (step index, ``log N``, ``log |B|``, how
far the target is from the state, and the data embedding). With ``δ = 0`` this is
``ρ_k = |B_k| / (n_k + |B_k| + w|B_k|)``, i.e. ``1/(k+1+w)`` for equal batches; with
``w → 0`` one pass over a partition of ``D`` averages the mini-batch targets weighted
by their sizes, which for conjugate-exponential models is the exact posterior for any
``N``.

:class:`LearnedSiteTarget` produces a target without gradients, from the raw
mini-batch alone (the ``signals=("data",)`` regime): ``Λ̂ = Λ_φ + (N/|B|) Λ_φ(B)``,
``η̂ = η_φ + (N/|B|) η_φ(B)`` with a learned prior term and a learned per-batch site.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from iai_prob.inference.posteriors import GaussianFamily
from iai_prob.models.pyro_networks import mlp

__all__ = ["LearnedSiteTarget", "NaturalGradientUpdate", "combine_natural", "step_context"]


def combine_natural(
    loc: torch.Tensor,
    precision: torch.Tensor,
    target_linear: torch.Tensor,
    target_precision: torch.Tensor,
    step_size: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 − ρ)(η, Λ) + ρ(η̂, Λ̂)``, returned as ``(μ, Λ)``; ``ρ`` has shape ``(T,)``."""
    rho = step_size.unsqueeze(-1)
    linear = (1 - rho) * (precision @ loc.unsqueeze(-1)).squeeze(-1) + rho * target_linear
    new_precision = (1 - rho.unsqueeze(-1)) * precision + rho.unsqueeze(-1) * target_precision
    new_precision = 0.5 * (new_precision + new_precision.mT)
    chol, info = torch.linalg.cholesky_ex(new_precision)
    failed = info != 0
    eye = torch.eye(loc.shape[-1], dtype=loc.dtype, device=loc.device)
    chol = torch.where(failed[..., None, None], eye, chol)
    new_loc = torch.cholesky_solve(linear.unsqueeze(-1), chol).squeeze(-1)
    return torch.where(failed.unsqueeze(-1), math.nan, new_loc), new_precision


def step_context(
    step: int,
    total_points: int,
    batch_points: int,
    loc: torch.Tensor,
    precision: torch.Tensor,
    target_linear: torch.Tensor,
    target_precision: torch.Tensor,
) -> torch.Tensor:
    """Scale-free features ``u_k`` of one step, ``(T, 5)``.

    ``[log(k+1)/log 1024, log N/log 1024, log|B|/log 1024, log1p(‖Λ̂⁻¹η̂ − μ‖_Λ̂)/5,
    (log det Λ̂ − log det Λ)/D / 5]``.
    """
    num_tasks, dim = loc.shape
    scale = math.log(1024.0)
    counts = torch.tensor(
        [
            math.log(step + 1) / scale,
            math.log(total_points) / scale,
            math.log(batch_points) / scale,
        ],
        dtype=loc.dtype,
        device=loc.device,
    ).expand(num_tasks, 3)
    target_chol = torch.linalg.cholesky_ex(target_precision)[0]
    target_loc = torch.cholesky_solve(target_linear.unsqueeze(-1), target_chol).squeeze(-1)
    delta = target_loc - loc
    distance = ((target_precision @ delta.unsqueeze(-1)).squeeze(-1) * delta).sum(-1)
    distance = distance.clamp_min(0).sqrt().log1p() / 5
    logdet_target = 2 * target_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    logdet_state = torch.linalg.slogdet(precision)[1]
    contraction = (logdet_target - logdet_state) / (5 * dim)
    extra = torch.stack([distance, contraction], dim=-1)
    return torch.cat([counts, torch.nan_to_num(extra, nan=0.0, posinf=10.0, neginf=-10.0)], -1)


class NaturalGradientUpdate(nn.Module):
    """Learned step size ``ρ_k = σ(−log(k + w) + δ_φ(u_k))`` (see module docstring)."""

    def __init__(self, context_dim: int, hidden_dim: int = 32, init_weight: float = 0.01):
        super().__init__()
        self.log_init_weight = nn.Parameter(torch.tensor(math.log(init_weight)))
        self.correction = mlp([context_dim, hidden_dim, hidden_dim, 1])
        nn.init.zeros_(self.correction[-1].weight)
        nn.init.zeros_(self.correction[-1].bias)

    def step_size(self, points_seen: int, batch_points: int, context: torch.Tensor) -> torch.Tensor:
        """``ρ_k`` for each task, ``(T,)``."""
        weight = self.log_init_weight.exp()
        logit = math.log(batch_points) - torch.log(points_seen + weight * batch_points)
        return torch.sigmoid(logit + self.correction(context).squeeze(-1))


class LearnedSiteTarget(nn.Module):
    """Gradient-free target from a mini-batch embedding (see module docstring)."""

    def __init__(self, embed_dim: int, family: GaussianFamily):
        super().__init__()
        self.family = family
        self.prior_raw = nn.Parameter(torch.zeros(family.num_raw()))
        self.site_head = nn.Linear(embed_dim, family.num_raw())
        nn.init.zeros_(self.site_head.weight)
        nn.init.zeros_(self.site_head.bias)

    def forward(self, embedding: torch.Tensor, likelihood_scale: float):
        prior_loc, prior_precision = self.family.from_raw(self.prior_raw)
        site_loc, site_precision = self.family.from_raw(self.site_head(embedding))
        precision = prior_precision + likelihood_scale * site_precision
        linear = (prior_precision @ prior_loc.unsqueeze(-1)).squeeze(-1) + likelihood_scale * (
            site_precision @ site_loc.unsqueeze(-1)
        ).squeeze(-1)
        return linear, precision
