"""Per-step training objectives and quality measures of a Gaussian state.

* reverse KL: ``−ELBO(q) = −E_q[log p(z, D)] − H(q)`` with reparameterized draws
  ``z = μ + L ε`` (``L Lᵀ = Λ⁻¹``); needs only the model;
* forward KL: ``−log q(z_true)`` on simulated tasks (Mittal et al. 2025b, §3);
* ``kl_to_exact``: ``KL(q ‖ p(z | D))`` against a closed-form posterior, analytic when
  both are Gaussians over the same coordinates, else a Monte Carlo estimate over the
  constrained values ``T(z)``.
"""

from __future__ import annotations

import torch
from torch.distributions import MultivariateNormal, kl_divergence

from iai_prob.fit_options import OBJECTIVES  # the names, defined once for both backends
from iai_prob.inference.log_joint import LogJoint
from iai_prob.inference.posteriors import GaussianFamily, covariance_tril
from iai_prob.inference.task_data import TaskData
from iai_prob.latent_layout import LatentLayout
from iai_prob.refinement_state import RefinementState

__all__ = [
    "OBJECTIVES",
    "elbo",
    "forward_kl",
    "kl_to_exact",
    "reverse_kl",
    "task_elbos",
    "task_losses",
]


def task_elbos(
    state: RefinementState,
    family: GaussianFamily,
    log_joint: LogJoint,
    data: TaskData,
    *,
    num_samples: int = 8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Monte Carlo ELBO of each task, ``(T,)`` (differentiable in the state)."""
    noise = torch.randn(
        num_samples, *state.loc.shape, generator=generator, dtype=state.loc.dtype
    ).to(state.loc.device)
    z = state.loc + (covariance_tril(state.precision) @ noise.unsqueeze(-1)).squeeze(-1)
    entropy = family.distribution(state.loc, state.precision).entropy()
    return log_joint.per_particle(z, data).mean(0) + entropy


def elbo(state, family, log_joint, data, **options) -> torch.Tensor:
    """Monte Carlo ELBO summed over tasks (:func:`task_elbos`; ``options``: its keywords)."""
    return task_elbos(state, family, log_joint, data, **options).sum()


def reverse_kl(state, family, log_joint, data, *, num_samples=8, generator=None) -> torch.Tensor:
    """``−ELBO`` averaged over tasks (equals KL(q ‖ p) up to ``log p(D)``)."""
    value = elbo(state, family, log_joint, data, num_samples=num_samples, generator=generator)
    return -value / state.loc.shape[0]


def forward_kl(
    state: RefinementState, family: GaussianFamily, true_z: torch.Tensor
) -> torch.Tensor:
    """``−log q(z_true)`` averaged over tasks; ``true_z`` is ``(T, D)`` unconstrained."""
    return -family.distribution(state.loc, state.precision).log_prob(true_z).mean()


def task_losses(
    objective: str,
    state: RefinementState,
    family: GaussianFamily,
    task,
    true_z: torch.Tensor | None,
    *,
    num_samples: int = 8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The loss ``objective`` (one of :data:`OBJECTIVES`) of ``state`` on each task of a
    prepared ``task``, ``(T,)``: ``−ELBO``, ``−log q(z_true)`` or their sum."""
    loss = torch.zeros_like(state.loc[:, 0])
    if objective in ("reverse_kl", "mixed"):
        loss = loss - task_elbos(
            state, family, task.log_joint, task.data, num_samples=num_samples, generator=generator
        )
    if objective in ("forward_kl", "mixed"):
        loss = loss - family.distribution(state.loc, state.precision).log_prob(true_z)
    return loss


def kl_to_exact(
    state: RefinementState,
    family: GaussianFamily,
    layout: LatentLayout,
    exact,
    *,
    site_order: tuple[str, ...] | None = None,
    num_samples: int = 512,
) -> torch.Tensor:
    """``KL(q ‖ p(θ | D))`` per task, ``(T,)``, for an exact posterior over flat ``θ``.

    ``site_order`` names the sites in the order ``exact`` flattens them (a task family's
    ``latent_sites``); by default the layout's order.
    """
    order = tuple(site_order or layout.site_names)
    identity = order == layout.site_names and all(site.is_real for site in layout.sites)
    q = family.distribution(state.loc, state.precision)
    if identity and isinstance(exact, MultivariateNormal):
        exact_q = MultivariateNormal(state.loc, precision_matrix=state.precision)
        return kl_divergence(exact_q, exact).reshape(-1)
    z = q.sample((num_samples,))
    values, log_jacobian = {}, 0.0
    for site, value, site_log_jacobian in layout.unpack(z):
        values[site.name] = value.reshape(*z.shape[:-1], -1)
        log_jacobian = log_jacobian + site_log_jacobian
    theta = torch.cat([values[name] for name in order], dim=-1)
    log_p = exact.log_prob(theta) + log_jacobian
    return (q.log_prob(z) - log_p).mean(0).reshape(-1)
