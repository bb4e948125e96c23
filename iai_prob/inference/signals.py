"""What a refinement step sees of a mini-batch besides the current state.

* **Curvature signal** (``"grad"``): the mini-batch ELBO gradient with respect to the
  variational parameters. For a Gaussian ``q = N(μ, Λ⁻¹)`` Bonnet's and Price's
  theorems give ``∇_μ E_q f_B = E_q ∇f_B`` and ``∇_Σ E_q f_B = ½ E_q ∇²f_B``, so the
  signal is ``(ḡ, H̄) = (E_q ∇f_B, E_q ∇²f_B)`` with ``f_B`` the mini-batch log joint
  scaled by ``N/|B|`` (:class:`~iai_prob.inference.log_joint.LogJoint`). The
  expectations use sigma points ``μ ± √D Σ^{½} e_i`` (exact for quadratic ``f``), the
  mean alone (a Laplace-style linearization), or ``S`` Monte Carlo draws.
* **Data signal** (``"data"``): a set-encoder embedding of the raw mini-batch.

:func:`natural_gradient_target` turns the curvature signal into the conjugate-
computation VI target (Khan & Lin 2017), ``Λ̂ = −H̄`` (projected to be positive
definite) and ``η̂ = ḡ + Λ̂ μ``, whose fixed point ``ḡ = 0`` is the Gaussian ELBO optimum.
:func:`preprocess_gradient` is the learned-optimizer input transform of Andrychowicz
et al. (2016).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from iai_prob.guide_options import LINEARIZATIONS
from iai_prob.inference.posteriors import GaussianFamily, absolute_eigenvalues, covariance_tril

__all__ = [
    "CurvatureSignal",
    "Target",
    "curvature_signal",
    "difference_spread",
    "linearization_points",
    "natural_gradient_target",
    "preprocess_gradient",
    "sigma_point_target",
]


class CurvatureSignal(NamedTuple):
    """``E_q ∇f_B`` ``(T, D)``, ``E_q ∇²f_B`` ``(T, D, D)`` and ``E_q f_B`` ``(T,)``."""

    grad: torch.Tensor
    hessian: torch.Tensor
    log_joint: torch.Tensor


def linearization_points(
    loc: torch.Tensor,
    precision: torch.Tensor,
    scheme: str,
    num_particles: int = 8,
    spread: float | None = None,
) -> torch.Tensor:
    """Points ``(S, T, D)`` at which to average gradients and Hessians under ``q``.

    Sigma points are ``μ ± spread · Σ^{½} e_i``, ``spread = √D`` unless given.
    """
    if scheme == "mean":
        return loc.unsqueeze(0)
    scale_tril = covariance_tril(precision)
    if scheme == "sigma_points":
        dim = loc.shape[-1]
        offsets = (math.sqrt(dim) if spread is None else spread) * scale_tril.mT
        offsets = offsets.movedim(-2, 0)  # (D, T, D)
        return torch.cat([loc + offsets, loc - offsets], dim=0)
    if scheme == "samples":
        noise = torch.randn(num_particles, *loc.shape, dtype=loc.dtype, device=loc.device)
        return loc + (scale_tril @ noise.unsqueeze(-1)).squeeze(-1)
    raise ValueError(f"unknown linearization {scheme!r}; choose from {LINEARIZATIONS}")


def curvature_signal(
    log_joint,
    loc: torch.Tensor,
    precision: torch.Tensor,
    batch,
    scheme: str,
    num_particles: int = 8,
    spread: float | None = None,
) -> CurvatureSignal:
    """Average gradient and Hessian of ``f_B`` under ``q = N(loc, precision⁻¹)``.

    With ``scheme="sigma_points"`` only gradients are taken (``log_joint.value_and_grad``,
    one compiled kernel where available): by Stein's lemma
    ``E_q ∇²f = Λ E_q[(z − μ) ∇f(z)ᵀ]``, and the sigma-point rule applied to it is exact
    for quadratic ``f``. At points ``μ ± s Σ^{½} e_i`` it reads ``(D/s²) Λ Ê[(z − μ) ∇fᵀ]``,
    which for a small ``spread`` ``s`` (:func:`difference_spread`) is the Hessian at the
    mean by central differences of the gradient (error ``O(s²)``, relative to ``Σ``'s
    scale): the ``"mean"`` linearization from gradients alone. ``"mean"`` and
    ``"samples"`` differentiate twice. Runs with gradients enabled even under
    ``torch.no_grad()`` (as in ``Predictive``) and returns detached tensors: the signal
    is an input to the update, not a path for meta-gradients.
    """
    loc, precision = loc.detach(), precision.detach()
    points = linearization_points(loc, precision, scheme, num_particles, spread)
    if scheme == "sigma_points":
        value, grad = log_joint.value_and_grad(points, batch)
        offsets = (precision.unsqueeze(0) @ (points - loc).unsqueeze(-1)).squeeze(-1)
        hessian = (offsets.unsqueeze(-1) * grad.unsqueeze(-2)).mean(0)
        if spread is not None:
            hessian = hessian * (loc.shape[-1] / spread**2)
        value = value.mean(0)
    else:
        with torch.enable_grad():
            z = points.requires_grad_(True)
            value = log_joint.per_task_mean(z, batch)
            (grad,) = torch.autograd.grad(value.sum() * z.shape[0], z, create_graph=True)
            hessian = _hessian_rows(grad, z).mean(0)
    return CurvatureSignal(
        grad=grad.detach().mean(0),
        hessian=(0.5 * (hessian + hessian.mT)).detach(),
        log_joint=value.detach(),
    )


class Target(NamedTuple):
    """The CVI target ``(η̂, Λ̂)`` and the curvature signal it was computed from."""

    linear: torch.Tensor
    precision: torch.Tensor
    signal: CurvatureSignal


def sigma_point_target(
    log_joint,
    loc: torch.Tensor,
    precision: torch.Tensor,
    family: GaussianFamily,
    min_precision: float = 1e-3,
    spread: float | None = None,
    *,
    traceable: bool = False,
) -> Target:
    """:func:`natural_gradient_target` of the sigma-point :func:`curvature_signal` of
    ``log_joint`` (bound to its data; with ``spread``: central differences, the target
    linearized at the mean). A solver step
    (:meth:`~iai_prob.inference.log_joint.LogJoint.solve`): ``traceable`` keeps it free
    of Python branches on values, for a compiled kernel."""
    signal = curvature_signal(log_joint, loc, precision, None, "sigma_points", spread=spread)
    linear, target_precision = natural_gradient_target(
        signal, loc, family, min_precision, traceable=traceable
    )
    return Target(linear, target_precision, signal)


def difference_spread(dtype: torch.dtype) -> float:
    """The sigma-point spread that makes :func:`curvature_signal` central differences of
    the gradient: ``eps^{1/3}`` of ``dtype`` in units of ``Σ^{½}`` (about ``6e-6`` in
    float64), which balances the ``O(s²)`` truncation against the ``O(eps/s)`` rounding."""
    return torch.finfo(dtype).eps ** (1 / 3)


def _hessian_rows(grad: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``∂ grad_i / ∂ z_j`` for every particle and task, ``(S, T, D, D)``.

    One vectorized backward pass (``is_grads_batched``) when the model's operations support
    it, else one backward pass per dimension.
    """
    dim = z.shape[-1]
    basis = torch.eye(dim, dtype=z.dtype, device=z.device).reshape(dim, 1, 1, dim)
    try:
        (rows,) = torch.autograd.grad(
            grad,
            z,
            grad_outputs=basis.expand(dim, *grad.shape),
            is_grads_batched=True,
            retain_graph=True,
        )
        return rows.movedim(0, -2)
    except RuntimeError:
        rows = [
            torch.autograd.grad(grad[..., j].sum(), z, retain_graph=True)[0] for j in range(dim)
        ]
        return torch.stack(rows, dim=-2)


def natural_gradient_target(
    signal: CurvatureSignal,
    loc: torch.Tensor,
    family: GaussianFamily,
    min_precision: float = 1e-3,
    *,
    traceable: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CVI target ``(η̂, Λ̂)``: ``Λ̂ = Π(−H̄)`` (eigenvalues ``≥ min_precision``,
    projected on the family's structure) and ``η̂ = ḡ + Λ̂ μ``; ``traceable``: see
    :func:`~iai_prob.inference.posteriors.absolute_eigenvalues`."""
    precision = family.project(
        absolute_eigenvalues(-signal.hessian, min_precision, traceable=traceable)
    )
    linear = signal.grad + (precision @ loc.unsqueeze(-1)).squeeze(-1)
    return linear, precision


def preprocess_gradient(grad: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """Learned-optimizer gradient preprocessing (Andrychowicz et al. 2016, App. A).

    Each coordinate ``g`` becomes ``(log|g|/p, sign g)`` if ``|g| ≥ e^{−p}`` and
    ``(−1, e^p g)`` otherwise; the output has a trailing dim of 2.
    """
    magnitude = grad.abs()
    large = magnitude >= math.exp(-p)
    first = torch.where(large, magnitude.clamp_min(math.exp(-p)).log() / p, -torch.ones_like(grad))
    second = torch.where(large, grad.sign(), math.exp(p) * grad)
    return torch.stack([first, second], dim=-1)
