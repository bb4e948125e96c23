"""Optimization-based update rules of the parametric regime: MAML- and Meta-SGD-style.

Baselines for the learned natural-gradient update (:mod:`.updates`): the state is the
same Gaussian ``q = N(μ, L Lᵀ)``, but a step is a plain gradient step on the
mini-batch ELBO in the usual reparameterized coordinates ``ψ = (μ, L_{i>j}, log L_ii)``
(as in Pyro's ``AutoMultivariateNormal``), per data point:

    ψ_{k+1} = ψ_k + α ⊙ ∇_ψ ELBO_B(ψ_k) / N,

with the gradients from the curvature signal (Bonnet's and Price's theorems):
``∇_μ = E_q ∇f_B``, ``∇_L = tril(E_q ∇²f_B · L) + diag(1/L_ii)`` (the second term is
the entropy's), and ``f_B`` the mini-batch log joint scaled by ``N/|B|``. The initial
state ``ψ_0`` is a learned constant (it does not read the data).

* ``"maml"`` (Finn, Abbeel, Levine, ICML 2017): a learned initialization and a fixed
  step size ``α`` (``inner_lr``). The signal is detached, so back-propagating through
  the trajectory (``fit(greedy=False)``) is first-order MAML; greedy training learns
  the initialization from the loss at ``k = 0`` only.
* ``"meta_sgd"`` (Li, Zhou, Chen, Li 2017): the same, with a learned step size per
  coordinate of ``ψ``, ``α = exp(a_φ)`` initialized at ``inner_lr``.

Both exist so that a table can show where a learned update rule beats a learned
initialization (Mittal, Mahajan, Lajoie, Pezeshki 2025, §2: MAML is ``g = SGD from a
learned init``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from iai_prob.guide_options import GRADIENT_RULES
from iai_prob.inference.posteriors import GaussianFamily, covariance_tril
from iai_prob.inference.signals import CurvatureSignal

__all__ = ["GradientStepUpdate", "elbo_gradient", "from_scale_tril"]

# log L_ii is kept in this range (standard deviations e^-9 … e^7).
_LOG_SCALE_RANGE = (-9.0, 7.0)


def elbo_gradient(signal: CurvatureSignal, scale_tril: torch.Tensor):
    """``(∇_μ, ∇_ψL)`` of ``E_q f_B + H(q)``; the diagonal of ``∇_ψL`` is ``∂/∂ log L_ii``."""
    grad_tril = torch.tril(signal.hessian @ scale_tril)
    diagonal = scale_tril.diagonal(dim1=-2, dim2=-1)
    grad_log_diagonal = diagonal * grad_tril.diagonal(dim1=-2, dim2=-1) + 1.0
    grad_tril = grad_tril - torch.diag_embed(grad_tril.diagonal(dim1=-2, dim2=-1))
    return signal.grad, grad_tril + torch.diag_embed(grad_log_diagonal)


def from_scale_tril(loc, log_tril, family: GaussianFamily):
    """``(μ, Λ)`` from ``μ`` and ``L`` stored with its diagonal as ``log L_ii``."""
    log_diagonal = log_tril.diagonal(dim1=-2, dim2=-1).clamp(*_LOG_SCALE_RANGE)
    tril = torch.tril(log_tril, -1) + torch.diag_embed(log_diagonal.exp())
    precision = torch.cholesky_inverse(tril)
    return loc, family.project(0.5 * (precision + precision.mT))


def _to_log_tril(precision: torch.Tensor) -> torch.Tensor:
    tril = covariance_tril(precision)
    diagonal = tril.diagonal(dim1=-2, dim2=-1)
    return torch.tril(tril, -1) + torch.diag_embed(diagonal.log())


class GradientStepUpdate(nn.Module):
    """Learned initial state and a plain ELBO gradient step (see module docstring).

    :param GaussianFamily family: the posterior family.
    :param str rule: ``"maml"`` (fixed ``α``) or ``"meta_sgd"`` (learned ``α`` per coordinate).
    :param float inner_lr: ``α`` (its initial value for ``"meta_sgd"``), per data point.
    """

    def __init__(self, family: GaussianFamily, rule: str, *, inner_lr: float = 0.1):
        super().__init__()
        if rule not in GRADIENT_RULES:
            raise ValueError(f"rule must be one of {GRADIENT_RULES}, got {rule!r}")
        if not (math.isfinite(inner_lr) and inner_lr > 0):
            raise ValueError(f"inner_lr must be a positive finite number, got {inner_lr!r}")
        self.family = family
        self.rule = rule
        self.inner_lr = float(inner_lr)
        dim = family.latent_dim
        self.init_raw = nn.Parameter(torch.zeros(family.num_raw()))
        if rule == "meta_sgd":
            log_lr = math.log(inner_lr)
            self.log_lr_loc = nn.Parameter(torch.full((dim,), log_lr))
            self.log_lr_tril = nn.Parameter(torch.full((dim, dim), log_lr))
        mask = torch.ones(dim, dim) if family.name != "diagonal" else torch.eye(dim)
        self.register_buffer("tril_mask", torch.tril(mask), persistent=False)

    def init(self, num_tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned ``(μ_0, Λ_0)``, expanded to ``num_tasks`` tasks."""
        loc, precision = self.family.from_raw(self.init_raw)
        return (
            loc.expand(num_tasks, *loc.shape),
            precision.expand(num_tasks, *precision.shape),
        )

    def step_sizes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``α`` for ``μ`` ``(D,)`` and for ``ψL`` ``(D, D)``."""
        if self.rule == "meta_sgd":
            return self.log_lr_loc.exp(), self.log_lr_tril.exp()
        dim = self.family.latent_dim
        device = self.init_raw.device
        return (
            torch.full((dim,), self.inner_lr, device=device),
            torch.full((dim, dim), self.inner_lr, device=device),
        )

    def forward(self, loc, precision, signal: CurvatureSignal, total_points: int):
        """One step: the new ``(μ, Λ)`` and the mean step size ``(T,)``."""
        log_tril = _to_log_tril(precision)
        grad_loc, grad_tril = elbo_gradient(signal, covariance_tril(precision.detach()))
        lr_loc, lr_tril = self.step_sizes()
        new_loc = loc + lr_loc * grad_loc / total_points
        new_log_tril = log_tril + self.tril_mask * lr_tril * grad_tril / total_points
        new_loc, new_precision = from_scale_tril(new_loc, new_log_tril, self.family)
        mean_lr = torch.cat([lr_loc, lr_tril[self.tril_mask.bool()]]).mean()
        return new_loc, new_precision, mean_lr.expand(loc.shape[0])
