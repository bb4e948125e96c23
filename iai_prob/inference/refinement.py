"""The refinement core: a pure ``init`` / ``step`` pair over a Gaussian state.

    λ_0     = init_φ(D_context)                    (one-shot set encoder)
    λ_{k+1} = step_φ(λ_k, B_k)                     (k = 0 … K−1, B_k mini-batches of D)

with ``λ = (μ, Λ)`` a Gaussian over the joint unconstrained latent per task (Mittal,
Mahajan, Lajoie, Pezeshki 2025, §3: iterative amortized inference; Marino et al. 2018).
One-shot amortization is ``K = 0``. The state and per-step diagnostics are NamedTuples
(as in BlackJAX); :class:`Refiner` holds the learned pieces (encoder, initial head,
update rule) and never mutates itself in ``init``/``step``. A state that is not finite
or not positive definite is reported with :class:`RefinementError`, never returned.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from iai_prob.guide_options import GRADIENT_RULES
from iai_prob.inference.compiled_forward import compiled_forward
from iai_prob.inference.damping import damped_combine
from iai_prob.inference.encoders import get_encoder
from iai_prob.inference.gradient_updates import GradientStepUpdate
from iai_prob.inference.numerics import flushing_denormals
from iai_prob.inference.posteriors import (
    GaussianFamily,
    gaussian_entropy,
    gaussian_kl,
    reversed_precision,
)
from iai_prob.inference.signals import curvature_signal, natural_gradient_target
from iai_prob.inference.task_data import TaskData
from iai_prob.inference.updates import LearnedSiteTarget, NaturalGradientUpdate, step_context
from iai_prob.refinement_state import RefinementError, RefinementInfo, RefinementState
from iai_prob.refiner_options import RefinerOptions

__all__ = [
    "Refiner",
    "minibatch_schedule",
]


def minibatch_schedule(
    num_points: int, batch_size: int, num_steps: int, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """``num_steps`` index tensors cycling over a random partition of ``range(num_points)``.

    Each pass draws a fresh permutation and splits it into ``⌈N/batch_size⌉`` batches
    whose sizes differ by at most one.
    """
    batches: list[torch.Tensor] = []
    num_batches = math.ceil(num_points / batch_size)
    while len(batches) < num_steps:
        permutation = torch.randperm(num_points, generator=generator)
        batches.extend(permutation.tensor_split(num_batches))
    return batches[:num_steps]


def _moved_less(new: RefinementState, old: RefinementState, tolerance=0.5) -> torch.Tensor:
    """Per task ``(T,)``: whether ``KL(q_new ‖ q_old) < tolerance`` nats."""
    with torch.no_grad():
        return gaussian_kl(new.loc, new.precision, old.loc, old.precision) < tolerance


def _keep_where(done: torch.Tensor, kept, new):
    """Per task: ``kept`` where ``done`` (a ``(T,)`` mask), else ``new`` (states or tensors)."""
    if isinstance(kept, RefinementState):
        return kept._replace(
            loc=torch.where(done[:, None], kept.loc, new.loc),
            precision=torch.where(done[:, None, None], kept.precision, new.precision),
        )
    return torch.where(done, kept, new)


def check_state(state: RefinementState) -> RefinementState:
    """Raise :class:`RefinementError` if any task's state is not finite or not PD (its
    precision factors as :func:`~iai_prob.inference.posteriors.covariance_tril` factors
    it, so that a state that passes can be sampled)."""
    finite = torch.isfinite(state.loc).all(-1) & torch.isfinite(state.precision).all((-1, -2))
    precision = reversed_precision(torch.nan_to_num(state.precision))
    positive = torch.linalg.cholesky_ex(precision)[1] == 0
    bad = (~(finite & positive)).nonzero().flatten().tolist()
    if bad:
        raise RefinementError(
            f"refinement step {state.step}: the posterior state of task(s) {bad[:10]} is not "
            "finite or not positive definite; check the data for extreme values, lower "
            "batch sizes' variance (larger batches) or use linearization='sigma_points'",
            step=state.step,
        )
    return state


class Refiner(nn.Module):
    """Learned pieces of the refinement: set encoder, initial head, update rule.

    :param GaussianFamily family: structure of the Gaussian state over ``z ∈ ℝ^D``
        (``D = family.latent_dim``).
    :param int feature_dim: per-datum feature size ``F``.
    :param RefinerOptions options: the encoder, signals, linearization and the rest
        (:class:`~iai_prob.refiner_options.RefinerOptions`; its defaults when ``None``).
        With ``options.standardize`` the prior's location and scale are the buffers
        ``prior_loc`` and ``prior_scale``, set by :meth:`set_prior` when the guide is
        built and saved with the weights.
    """

    def __init__(
        self, family: GaussianFamily, feature_dim: int, options: RefinerOptions | None = None
    ):
        super().__init__()
        options = options or RefinerOptions()
        latent_dim = family.latent_dim
        self.feature_dim = feature_dim
        self.family = family
        self.options = options
        if options.standardize:
            self.register_buffer("prior_loc", torch.zeros(latent_dim))
            self.register_buffer("prior_scale", torch.ones(latent_dim))
        if options.update in GRADIENT_RULES:
            self.gradient_update = GradientStepUpdate(
                family, options.update, inner_lr=options.inner_lr
            )
            return
        self.encoder = get_encoder(options.encoder, feature_dim, **options.encoder_options)
        embed_dim = self.encoder.embed_dim
        self.init_head = nn.Linear(embed_dim, family.num_raw())
        nn.init.zeros_(self.init_head.weight)
        nn.init.zeros_(self.init_head.bias)
        context_dim = options.step_context_dim(embed_dim)
        self.update = NaturalGradientUpdate(context_dim)
        self.site_target = (
            None if "grad" in options.signals else LearnedSiteTarget(embed_dim, family)
        )

    @property
    def latent_dim(self) -> int:
        """``D``, the family's."""
        return self.family.latent_dim

    def set_prior(self, loc, scale) -> None:
        """Set the prior's location ``m`` and scale ``s`` (``(D,)`` arrays) that a
        standardized refiner reads its initial state in."""
        if not self.options.standardize:
            raise RuntimeError("set_prior is for a refiner built with standardize=True")
        self.prior_loc.copy_(torch.as_tensor(loc))
        self.prior_scale.copy_(torch.as_tensor(scale))

    def _embed(self, features: torch.Tensor, total_points, mask=None) -> torch.Tensor:
        """The set encoder on ``features`` (through ``asinh`` when standardized); ``mask``
        ``(T, n)`` marks a padded batch's valid points."""
        if self.options.standardize:
            features = torch.asinh(features)
        if mask is None:
            return compiled_forward(self.encoder, features, total_points)
        return compiled_forward(self.encoder, features, total_points, mask)

    def _in_prior_units(self, loc: torch.Tensor, precision: torch.Tensor) -> RefinementState:
        """``(m + s ⊙ μ, S⁻¹ Λ S⁻¹)`` when standardized, else ``(μ, Λ)``, checked."""
        if self.options.standardize:
            scale = self.prior_scale.to(loc.dtype)
            loc = self.prior_loc.to(loc.dtype) + scale * loc
            precision = precision / (scale[:, None] * scale[None, :])
        return check_state(RefinementState(loc, precision))

    @flushing_denormals
    def init(self, data: TaskData) -> RefinementState:
        """``λ_0`` from the first ``context_size`` points (and the count ``N``; per task
        and with its valid points alone in a padded batch)."""
        if self.options.update in GRADIENT_RULES:
            return self._in_prior_units(*self.gradient_update.init(data.features.shape[0]))
        context = slice(None, self.options.context_size)
        mask = None if data.mask is None else data.mask[:, context]
        embedding = self._embed(data.features[:, context], data.dataset_sizes, mask)
        return self._in_prior_units(*self.family.from_raw(self.init_head(embedding)))

    def _mean_target(self, state: RefinementState, batch: TaskData, log_joint):
        """The CVI target linearized at the mean alone (a Newton step), the fallback."""
        signal = curvature_signal(log_joint, state.loc, state.precision, batch, "mean")
        return natural_gradient_target(signal, state.loc, self.family, self.options.min_precision)

    @flushing_denormals
    def step(
        self, state: RefinementState, batch: TaskData, log_joint
    ) -> tuple[RefinementState, RefinementInfo]:
        """``λ_{k+1}`` from ``λ_k`` and the mini-batch ``batch`` (see module docstring)."""
        if self.options.update in GRADIENT_RULES:
            return self._gradient_step(state, batch, log_joint)
        embedding = None
        if "data" in self.options.signals:
            embedding = self._embed(batch.features, batch.num_points)
        if "grad" not in self.options.signals:
            target = self.site_target(embedding, batch.likelihood_scale)
            new_state, step_size = self._advance(state, batch, log_joint, [target], embedding)
            return new_state, RefinementInfo(step_size, torch.full_like(step_size, torch.nan))
        point, base, result, done = state, None, None, None
        for sweep in range(self.options.max_relinearizations + 1):
            signal = curvature_signal(
                log_joint,
                point.loc,
                point.precision,
                batch,
                self.options.linearization,
                self.options.num_particles,
            )
            targets = [
                natural_gradient_target(signal, point.loc, self.family, self.options.min_precision)
            ]
            if self.options.linearization != "mean":
                targets.append(lambda point=point: self._mean_target(point, batch, log_joint))
            if sweep == 0:
                batch_log_joint = signal.log_joint
                if self.options.linearization == "sigma_points":
                    entropy = gaussian_entropy(state.precision)
                    base = torch.nan_to_num(signal.log_joint + entropy.detach(), nan=-torch.inf)
            new_state, step_size = self._advance(state, batch, log_joint, targets, embedding, base)
            # each task keeps the step of the first sweep that moved it less than the
            # tolerance, so a task's result never depends on the other tasks of its batch
            if result is None:
                result = (new_state, step_size)
            else:
                result = (
                    _keep_where(done, result[0], new_state),
                    _keep_where(done, result[1], step_size),
                )
            moved_less = _moved_less(new_state, point)
            done = moved_less if done is None else done | moved_less
            if sweep == self.options.max_relinearizations or bool(done.all()):
                break
            point = new_state.detach()
        return result[0], RefinementInfo(result[1], batch_log_joint)

    def _gradient_step(self, state, batch, log_joint):
        """A MAML / Meta-SGD step: ``ψ + α ⊙ ∇ψ ELBO_B / N`` (:mod:`.gradient_updates`)."""
        signal = curvature_signal(
            log_joint,
            state.loc,
            state.precision,
            batch,
            self.options.linearization,
            self.options.num_particles,
        )
        loc, precision, step_size = self.gradient_update(
            state.loc, state.precision, signal, batch.total_points
        )
        new_state = RefinementState(
            loc, precision, state.step + 1, state.points_seen + batch.num_points
        )
        return check_state(new_state), RefinementInfo(step_size, signal.log_joint)

    def _advance(self, state, batch, log_joint, targets, embedding, base=None):
        """Damped step from ``state`` toward the first target (later ones are fallbacks)."""
        context = step_context(
            state.step,
            batch.total_points,
            batch.num_points,
            state.loc,
            state.precision,
            *targets[0],
        ).detach()
        if embedding is not None:
            context = torch.cat([context, embedding], dim=-1)
        step_size = self.update.step_size(state.points_seen, batch.num_points, context)
        makers = [t if callable(t) else (lambda t=t: t) for t in targets]
        loc, precision, step_size = damped_combine(
            state.loc, state.precision, step_size, makers, batch, log_joint, base=base
        )
        new_state = RefinementState(
            loc,
            self.family.project(precision),
            state.step + 1,
            state.points_seen + batch.num_points,
        )
        check_state(new_state)
        return new_state, step_size
