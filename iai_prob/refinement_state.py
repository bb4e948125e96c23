"""The refinement's state, its per-step diagnostics and its error, for both backends.

A refinement keeps, per task, a Gaussian ``q_λ = N(μ, Λ⁻¹)`` over the unconstrained
latent and improves it a mini-batch at a time (Mittal, Mahajan, Lajoie, Pezeshki 2025,
§3). Its state and what a step reports are the same in PyTorch
(:mod:`iai_prob.inference.refinement`) and JAX (:mod:`iai_prob.numpyro.refinement`):
named tuples of the backend's arrays, written once here, so that code reading a state
(diagnostics, the convergence phase, checkpoints of a run) reads one type, and one
:class:`RefinementError` is caught whichever backend raised it. Torch-free and JAX-free.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["RefinementError", "RefinementInfo", "RefinementState"]


class RefinementState(NamedTuple):
    """Gaussian state per task: ``loc`` ``(T, D)``, ``precision`` ``(T, D, D)``, the number
    of steps taken and of data points consumed (arrays of the backend: ``torch.Tensor``
    or ``jax.Array``; PyTorch also keeps the counts as ints)."""

    loc: Any
    precision: Any
    step: Any = 0
    points_seen: Any = 0

    def detach(self) -> RefinementState:
        """The state with ``loc`` and ``precision`` cut from PyTorch's autograd graph (a
        JAX state holds no graph and is returned as it is)."""
        if not hasattr(self.loc, "detach"):
            return self
        return self._replace(loc=self.loc.detach(), precision=self.precision.detach())


class RefinementInfo(NamedTuple):
    """Diagnostics of one step: the step size used ``ρ_k`` ``(T,)`` (0 where the safeguard
    rejected every proposal) and ``E_q f_B`` ``(T,)`` at the state before the step."""

    step_size: Any
    batch_log_joint: Any


class RefinementError(RuntimeError):
    """A refinement state stopped being finite or positive definite.

    :ivar step: the refinement step whose state failed (``None`` if not said).
    """

    def __init__(self, message: str, *, step: int | None = None):
        super().__init__(message)
        self.step = step
