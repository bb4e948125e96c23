"""``IterativeAmortizedGuide``: an amortized, iteratively refined Pyro guide over task latents.

For a dataset ``D`` the guide computes a Gaussian ``q_λ(z | D)`` over the joint
unconstrained global latents ``z`` (see :mod:`iai_prob.inference.sites`) by

    λ_0 = init_φ(D),     λ_{k+1} = step_φ(λ_k, B_k),   k = 0 … K−1,

with mini-batches ``B_k`` of ``D`` (:mod:`iai_prob.inference.refinement`), then
samples ``z ~ q_{λ_K}`` and emits each global site as ``Delta(T(z))`` with the
Jacobian as log density, like Pyro's ``AutoContinuous``. It is a
:class:`~pyro.infer.autoguide.AutoGuide`, so it works unchanged with ``SVI``
(``Trace_ELBO``, ``TraceMeanField_ELBO``, ``TraceEnum_ELBO``), ``Predictive``,
``poutine.trace`` and ``psis_diagnostic``; the model's arguments are the dataset.

Threads: Pyro's effect-handler stack is one list per process, not per thread, so two
calls running at once push and pop each other's handlers. Every entry point of the
guide (calling it, ``posterior``, ``median``, ``quantiles``, ``refine``, …) holds one
process-wide re-entrant lock, so guides can be called from several threads (the calls
run one at a time and give the serial answers). The lock cannot cover Pyro code around
the guide: ``Predictive``, ``SVI`` or ``poutine.trace`` running in two threads at once
share that stack unlocked and fail (Pyro's limitation); use one thread per process.

Iterative Amortized Inference: Mittal, Mahajan, Lajoie, Pezeshki (2025),
arXiv:2510.11471; Marino, Yue, Mandt (ICML 2018).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoGuide

from iai_prob.checks import check_positive_int, check_probabilities
from iai_prob.guide_card import build_from_card, read_guide_checkpoint
from iai_prob.guide_options import GuideOptions
from iai_prob.inference.checkpoint import family_of_checkpoint, restore_guide, save_guide
from iai_prob.inference.compiled_log_joint import compiling_now
from iai_prob.inference.convergence import FullData, converge, importance_check
from iai_prob.inference.log_joint import LogJoint
from iai_prob.inference.memo import LastDataset
from iai_prob.inference.objectives import elbo
from iai_prob.inference.posteriors import get_posterior_family
from iai_prob.inference.refinement import (
    RefinementInfo,
    RefinementState,
    Refiner,
    check_state,
    minibatch_schedule,
)
from iai_prob.inference.sites import discover_layout, site_priors
from iai_prob.inference.task_data import TaskData, read_task_data
from iai_prob.inference.validation import (
    check_log_prob,
    check_plate_shapes,
    explained_failures,
    trace_model,
)
from iai_prob.latent_layout import LatentLayout, group_plates
from iai_prob.models.base import TaskFamily
from iai_prob.moment_matching import moment_matched, vouched
from iai_prob.posterior_families import family_options
from iai_prob.posterior_status import (
    PosteriorStatus,
    PosteriorWarning,
    in_notice_band,
    warn_if_unreliable,
)
from iai_prob.prior_standardization import PRIOR_DRAWS, PRIOR_SEED, prior_location_scale
from iai_prob.refiner_options import RefinerOptions

__all__ = [
    "IterativeAmortizedGuide",
    "PreparedTask",
    "RefinementStep",
    "load_family_guide",
    "load_guide",
    "prepare_task",
]


class PreparedTask(NamedTuple):
    """A dataset read through the model: layout, data and the log-joint evaluator."""

    layout: LatentLayout
    data: TaskData
    log_joint: LogJoint


class RefinementStep(NamedTuple):
    """One entry of :meth:`IterativeAmortizedGuide.refinement_trace`."""

    step: int
    state: RefinementState
    info: RefinementInfo | None
    elbo: torch.Tensor


_PYRO_STACK_LOCK = threading.RLock()
"""Held by every entry point of every guide: Pyro's handler stack is process-global."""


def _serialized(method):
    """Run ``method`` holding :data:`_PYRO_STACK_LOCK` (see the module docstring)."""

    @functools.wraps(method)
    def locked(*args, **kwargs):
        with _PYRO_STACK_LOCK:
            return method(*args, **kwargs)

    return locked


def _state_of(state: RefinementState, loc, precision) -> RefinementState:
    """``state`` with NumPy ``loc`` and ``precision`` in its own dtype and device."""
    return state._replace(
        loc=torch.as_tensor(loc).to(state.loc),
        precision=torch.as_tensor(precision).to(state.precision),
    )


def _constrained(latent: torch.Tensor, layout: LatentLayout) -> dict[str, torch.Tensor]:
    """The constrained value of each global site for a joint unconstrained ``latent``."""
    return {site.name: value for site, value, _ in layout.unpack(latent)}


def _to_device(value, device):
    """``value`` (nested tuples / dicts of tensors) with every tensor on ``device``."""
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _uses_enumeration(trace) -> bool:
    return any(
        site["type"] == "sample" and site["infer"].get("enumerate") == "parallel"
        for site in trace.nodes.values()
    )


def prepare_task(
    model,
    args: tuple,
    kwargs: dict,
    *,
    data_plate: str = "data",
    tasks_plate: str = "tasks",
    featurize: Callable | None = None,
) -> PreparedTask:
    """Trace ``model(*args, **kwargs)`` once and read its global latent layout, its data
    and its log-joint evaluator (any posterior over the globals, not only this guide's,
    is evaluated through it: see :mod:`iai_prob.diagnostics`)."""
    trace = trace_model(model, args, kwargs)
    layout = discover_layout(trace, data_plate=data_plate, tasks_plate=tasks_plate)
    check_plate_shapes(trace, data_plate=data_plate, tasks_plate=tasks_plate)
    data = read_task_data(
        trace, args, kwargs, data_plate=data_plate, tasks_plate=tasks_plate, featurize=featurize
    )
    check_log_prob(trace, model, args, kwargs)
    return PreparedTask(layout, data, LogJoint(model, layout, data_plate, _uses_enumeration(trace)))


class IterativeAmortizedGuide(GuideOptions, AutoGuide):
    """Amortized guide ``q_φ(θ | D)`` refined over mini-batches of ``D``.

    :param model: a Pyro model whose global latents lie outside the data plate, or a
        :class:`~iai_prob.models.base.TaskFamily` (its ``model`` is used and it is kept as
        ``guide.family``).
    :param str family: ``"full_rank"``, ``"low_rank"`` or ``"diagonal"`` Gaussian.
    :param str encoder: set encoder, ``"set_transformer"`` or ``"deep_sets"``.
    :param int num_steps: refinement steps per call; ``None`` = one pass over the data
        in mini-batches of ``batch_size`` (``0`` = one-shot amortization).
    :param int batch_size: mini-batch size ``|B|``.
    :param tuple signals: what each step sees: ``"data"`` (mini-batch embedding) and/or
        ``"grad"`` (mini-batch ELBO gradient and curvature).
    :param str data_plate: name of the model's data plate.
    :param str tasks_plate: name of the optional outer plate over tasks.
    :param str linearization: ``"sigma_points"``, ``"mean"`` or ``"samples"``.
    :param int num_particles: draws when ``linearization="samples"``.
    :param int context_size: at most this many points feed the one-shot encoder.
    :param int rank: rank of the ``"low_rank"`` family.
    :param dict encoder_options: keyword arguments of the encoder.
    :param callable featurize: ``featurize(*args, **kwargs) -> (T?, N, F)`` overrides the
        per-datum features.
    :param int seed: seeds the mini-batch order, so a call is a function of its data.
    :param str update: the update rule: ``"natural_gradient"`` (default; learned damped
        CVI steps), or the optimization-based baselines ``"maml"`` (learned initial state,
        plain ELBO gradient steps of size ``inner_lr``) and ``"meta_sgd"`` (learned
        per-coordinate step sizes); see :mod:`iai_prob.inference.gradient_updates`.
    :param float inner_lr: step size of the gradient rules (initial value for ``"meta_sgd"``).
    :param int max_relinearizations: a step that moves the state by more than 0.5 nats
        recomputes its gradient signal at the proposal and retakes the step, up to this
        many times (a proximal step for non-conjugate models). ``0`` suits a likelihood
        that is Gaussian in the latents (e.g. linear regression): its target does not
        depend on where it is linearized, so a re-linearization retakes the same step.
    :param bool standardize: start from the prior, not from ``N(0, I)`` in the
        unconstrained space, and read the features through ``asinh``
        (:mod:`iai_prob.prior_standardization`): an untrained guide then starts where the
        model's priors put the latents, in any units. Checkpoints written before this
        option load with ``False``, the start they were trained from.
    :param convergence: the convergence phase that finishes every default answer
        (:class:`~iai_prob.convergence_settings.Convergence`: safeguarded full-data steps
        until the fixed point, its cap and tolerance, the PSIS k̂ draws); ``None`` returns
        the learned refinement's ``λ_K`` as is (one-shot speed, no guarantee, no status).
        Not part of the checkpoint: set ``guide.convergence`` after loading.
    """

    def _attach_model(self, model) -> None:
        task_family = model if isinstance(model, TaskFamily) else getattr(model, "__self__", None)
        AutoGuide.__init__(self, model.model if isinstance(model, TaskFamily) else model)
        # kept in a tuple: a family that is an nn.Module (explicit regime) must not become a
        # submodule of the guide (its decoder is the model's, trained and saved as such)
        self._task_family = (task_family if isinstance(task_family, TaskFamily) else None,)
        self.refiner: Refiner | None = None
        self._last_dataset = LastDataset()  # Predictive's S draws refine once

    @property
    def family(self) -> TaskFamily | None:
        """The :class:`~iai_prob.models.base.TaskFamily` the guide was built for, if any."""
        return self._task_family[0]

    # ------------------------------------------------------------------ setup
    def _setup_prototype(self, *args, **kwargs):
        task = self.prepare(*args, **kwargs)  # refuses unsupported models by name first
        with explained_failures(self.model, args, kwargs):
            super()._setup_prototype(*args, **kwargs)
        if self.refiner is None:
            refiner = self.build(task.layout.latent_dim, task.data.features.shape[-1])
            self.layout_signature = task.layout.signature()
            if refiner.options.standardize:
                priors = site_priors(self.prototype_trace, task.layout, PRIOR_DRAWS, PRIOR_SEED)
                refiner.set_prior(*prior_location_scale(task.layout, priors))

    def build(self, latent_dim: int, feature_dim: int) -> Refiner:
        """Create the learned pieces for a ``latent_dim``-dim latent and ``feature_dim``
        per-datum features."""
        config = self.config
        family = get_posterior_family(config["family"], latent_dim, **family_options(config))
        self.refiner = Refiner(family, feature_dim, RefinerOptions.of_config(config))
        return self.refiner

    @property
    def latent_dim(self) -> int:
        return self._require_refiner().latent_dim

    def _require_refiner(self) -> Refiner:
        if self.refiner is None:
            raise RuntimeError(
                "the guide has not seen the model yet: call it once with data, or train it with "
                "iai_prob.inference.fit"
            )
        return self.refiner

    @_serialized
    def prepare(self, *args, **kwargs) -> PreparedTask:
        """Trace the model on ``*args, **kwargs`` and read its latent layout and data."""
        if self.refiner is not None:  # the data go where the guide's weights are
            args, kwargs = _to_device((args, kwargs), self._device())
        layout, data, log_joint = prepare_task(self.model, args, kwargs, **self._reading())
        built_for = None if self.refiner is None else self.refiner.feature_dim
        self._check_dataset(layout, data.features.shape[-1], built_for)
        if self.refiner is not None:
            data.features = data.features.to(self._device())
        return PreparedTask(layout, data, log_joint)

    def _device(self) -> torch.device:
        first = next(self._require_refiner().parameters(), None)
        return torch.device("cpu") if first is None else first.device

    # ------------------------------------------------------------- refinement
    def schedule(
        self, num_points: int, num_steps: int | None = None, batch_size: int | None = None
    ):
        """The mini-batch index tensors of one call (seeded: a call is a function of its data)."""
        batch_size = batch_size or self.config["batch_size"]
        if num_steps is None:
            num_steps = self.config["num_steps"]
        if num_steps is None:
            num_steps = math.ceil(num_points / batch_size)
        generator = torch.Generator().manual_seed(self.config["seed"])
        return minibatch_schedule(num_points, min(batch_size, num_points), num_steps, generator)

    def initial_state(self, data: TaskData) -> RefinementState:
        """``λ_0`` from a seeded random context subset of ``data`` (of each task's own valid
        points in a padded batch: the subset it gets alone)."""
        refiner = self._require_refiner()
        if data.mask is not None:
            return refiner.init(self._padded_context(data, refiner.options.context_size))
        if data.num_points > refiner.options.context_size:
            data = data.subset(self._context_index(data.num_points, refiner.options.context_size))
        return refiner.init(data)

    def _context_index(self, num_points: int, context_size: int) -> torch.Tensor:
        """The seeded random context of a dataset of ``num_points > context_size`` points."""
        generator = torch.Generator().manual_seed(self.config["seed"] + 1)
        return torch.randperm(num_points, generator=generator)[:context_size]

    def _padded_context(self, data: TaskData, context_size: int) -> TaskData:
        """The encoder's view of a padded batch's contexts: per task ``t`` the points
        :meth:`initial_state` takes from its ``N_t`` alone (all of them, in order, when
        ``N_t ≤ context_size``), gathered into ``(T, C, F)`` features with their mask
        (the model's arguments are left out: the encoder reads the features only)."""
        width = min(context_size, data.num_points)
        index = torch.zeros(data.features.shape[0], width, dtype=torch.long)
        valid = torch.zeros(data.features.shape[0], width, dtype=torch.bool)
        for task, size in enumerate(data.task_points.tolist()):
            if size > context_size:
                chosen = self._context_index(size, context_size)
            else:
                chosen = torch.arange(size)
            index[task, : len(chosen)], valid[task, : len(chosen)] = chosen, True
        device = data.features.device
        features = data.features.take_along_dim(index.to(device)[..., None], dim=1)
        return replace(
            data, args=(), kwargs={}, features=features, num_points=width, mask=valid.to(device)
        )

    def trajectory(
        self,
        task: PreparedTask,
        *,
        num_steps: int | None = None,
        batch_size: int | None = None,
        greedy: bool = False,
    ):
        """Yield ``(state, info)`` for ``λ_0 … λ_K`` (``info`` is ``None`` for ``λ_0``).

        With ``greedy=True`` every step starts from a detached state (stop-gradient).
        """
        refiner = self._require_refiner()
        schedule = self.schedule(task.data.num_points, num_steps, batch_size)
        if schedule and task.data.mask is not None:
            raise ValueError(
                "datasets of unequal sizes in one padded batch get the default answer (the "
                "encoder's start and the convergence phase), not learned mini-batch steps: "
                "refine them in batches of equal sizes"
            )
        state = self.initial_state(task.data)
        yield state, None
        for index in schedule:
            if greedy:
                state = state.detach()
            state, info = refiner.step(state, task.data.subset(index), task.log_joint)
            yield state, info

    @_serialized
    def final_state(self, task: PreparedTask, **options) -> RefinementState:
        """``λ_K`` for a prepared task."""
        *_, (last, _) = self.trajectory(task, **options)
        return last

    @_serialized
    def solve(
        self,
        task: PreparedTask,
        *,
        num_steps: int | None = None,
        batch_size: int | None = None,
        names=None,
    ) -> tuple[RefinementState, PosteriorStatus | None]:
        """The default answer for a prepared task: the convergence phase
        (:mod:`.convergence`) from the guide's start, with its status; a
        :class:`~iai_prob.posterior_status.PosteriorWarning` names the datasets
        (``names``: labels of a batch's tasks) that did not converge or have ``k̂ > 0.7``.

        The phase starts from the encoder's ``λ_0`` unless ``num_steps`` is given (as
        :meth:`refine` does) or ``Convergence(refine_first=True)``. With gradients enabled
        (training, SVI) or ``guide.convergence = None`` it is :meth:`final_state` (the
        learned refinement's ``λ_K``) and the status is ``None``: the phase is a
        per-dataset solver, not a path for meta-gradients.
        """
        rule = self.convergence
        if rule is None or torch.is_grad_enabled():
            return self.final_state(task, num_steps=num_steps, batch_size=batch_size), None
        if num_steps is None and not rule.refine_first:
            num_steps = 0  # start from the encoder's λ_0 (see Convergence.refine_first)
        state = self.final_state(task, num_steps=num_steps, batch_size=batch_size)
        data = task.data.to_dtype(self._phase_dtype(state))
        full = FullData.in_memory(data, task.log_joint, rule.chunk_size)
        steps_per_pass = math.ceil(data.num_points / (batch_size or self.config["batch_size"]))
        batched = task.layout.num_tasks is not None
        return self._converged(state, full, steps_per_pass, batched, names)

    def _phase_dtype(self, state: RefinementState) -> torch.dtype:
        return torch.float64 if self.convergence.float64 else state.loc.dtype

    def _converged(self, state, full: FullData, steps_per_pass: int, batched: bool, names=None):
        """The convergence phase from the learned ``state`` over ``full``, its status and
        warnings (see :meth:`solve`). The answer, in the guide's dtype, must still be a
        Gaussian (as NumPyro's ``finish`` checks): a precision positive definite in the
        phase's float64 but not once cast (its scales span more than float32 resolves, as
        when a hierarchical model's group scale collapses towards zero) is a
        :class:`RefinementError` naming the task, not an error of the distribution."""
        try:
            state, status = self._converged_in(
                self._phase_dtype(state), state, full, steps_per_pass, batched, names
            )
        except (RuntimeError, ValueError):
            if self._phase_dtype(state) == state.loc.dtype:
                raise
            # a model with float32 parameters of its own (a learned decoder's nn.Linear)
            # cannot run on float64 latents: run the phase in the guide's dtype
            full = full.to_dtype(state.loc.dtype)
            state, status = self._converged_in(
                state.loc.dtype, state, full, steps_per_pass, batched, names
            )
        return check_state(state), status

    def _converged_in(self, dtype, state, full, steps_per_pass, batched, names):
        rule, refiner = self.convergence, self._require_refiner()
        answer_dtype = state.loc.dtype
        state, converged, full_steps, residual = converge(
            state._replace(loc=state.loc.to(dtype), precision=state.precision.to(dtype)),
            full,
            refiner.family,
            rule,
            refiner.options,
        )
        evaluated = full if dtype == answer_dtype else full.to_dtype(answer_dtype)

        def checked(candidate, seed):  # f_D at the draws in the guide's dtype (see there)
            return importance_check(
                candidate.loc,
                candidate.precision,
                evaluated,
                rule.khat_draws,
                seed,
                log_p_dtype=answer_dtype,
            )

        check = checked(state, self.config["seed"] + 3)
        khat = check.khat
        matched = rule.moment_match and refiner.family.name == "full_rank"
        band = in_notice_band(khat, converged.cpu().numpy())
        if matched and band.any():  # the VI optimum usable but not close: its PSIS moments
            as_state = functools.partial(_state_of, state)
            loc, precision = state.loc.cpu().numpy(), state.precision.cpu().numpy()
            loc, precision, khat = vouched(
                (loc, precision, khat),
                moment_matched(loc, precision, check.draws.cpu().numpy(), check.log_weights, band),
                lambda *moved: checked(as_state(*moved), self.config["seed"] + 4).khat,
            )
            state = as_state(loc, precision)
        state = state._replace(
            loc=state.loc.to(answer_dtype), precision=state.precision.to(answer_dtype)
        )
        learned_steps = state.step - int(full_steps.max())
        status = PosteriorStatus.of(
            converged=converged.cpu().numpy(),
            passes=(full_steps.cpu() + learned_steps / steps_per_pass).numpy(),
            full_steps=full_steps.cpu().numpy(),
            residual=residual.cpu().numpy(),
            khat=khat,
            batched=batched,
        )
        self.last_status = status
        warn_if_unreliable(
            status, max_steps=rule.max_steps, batched=batched, names=names, moment_matched=matched
        )
        return state, status

    def _distribution(self, state: RefinementState, layout: LatentLayout, family=None):
        family = family or self._require_refiner().family
        loc = layout.to_joint(state.loc)
        precision = layout.to_joint(state.precision.flatten(-2)).unflatten(
            -1, state.precision.shape[-2:]
        )
        return family.distribution(loc, precision)

    # ------------------------------------------------------------------- Pyro
    @_serialized
    def __call__(self, *args, **kwargs):
        """``forward`` (through ``PyroModule.__call__``), holding the handler-stack lock."""
        return super().__call__(*args, **kwargs)

    def forward(self, *args, **kwargs):
        """Sample the global latents for the dataset in ``*args, **kwargs``."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        # under SVI the refiner's weights are the guide's parameters; without gradients
        # (Predictive draws) registering them, and reading ``self.refiner`` inside a
        # PyroModule call, syncs every weight with the param store: 4 ms a draw each
        if torch.is_grad_enabled():
            pyro.module(f"{self._pyro_name}.refiner", self.refiner)
        refiner = self._modules["refiner"]
        weights = list(refiner.parameters())
        options = (self.config, self.convergence)
        memo = self._last_dataset.get(args, kwargs, weights, options)
        if memo is None:  # a new dataset, new weights or options, or gradients on
            task = self.prepare(*args, **kwargs)
            layout, state = task.layout, self.solve(task)[0]
            memo = (layout, self._distribution(state, layout, refiner.family))
            self._last_dataset.put(args, kwargs, weights, options, memo)
        layout, posterior = memo
        plate = (
            contextlib.nullcontext()
            if layout.num_tasks is None
            else pyro.plate(self.config["tasks_plate"], layout.num_tasks, dim=layout.tasks_dim)
        )
        result = {}
        with plate:
            latent = pyro.sample(
                f"_{self._pyro_name}_latent", posterior, infer={"is_auxiliary": True}
            )
            for site, value, log_jacobian in layout.unpack(latent, model_shapes=True):
                log_density = 0.0 if poutine.get_mask() is False else -log_jacobian
                with group_plates(pyro.plate, site):
                    result[site.name] = pyro.sample(
                        site.name,
                        dist.Delta(
                            value,
                            log_density=log_density,
                            event_dim=site.event_dim - len(site.plate_shape),
                        ),
                    )
        return result

    # ------------------------------------------------------------- user API
    def _prepared(self, *args, **kwargs) -> PreparedTask:
        """:meth:`prepare`, building the guide from this call first if it is new."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        return self.prepare(*args, **kwargs)

    def _posterior_and_layout(self, *args, **kwargs):
        task = self._prepared(*args, **kwargs)
        return self._answer(task, *self.solve(task)), task.layout

    def _answer(self, task: PreparedTask, state: RefinementState, status, family=None):
        """The flat distribution of ``state``, carrying ``status`` as ``.status``."""
        return self._answer_of(state, status, task.layout, family)

    def _answer_of(self, state, status, layout: LatentLayout, family=None):
        distribution = self._flat_distribution(state, layout, family)
        distribution.status = status
        return distribution

    @torch.no_grad()
    @_serialized
    def posterior(self, *args, **kwargs):
        """``q(z | D)``: a torch distribution over the flattened unconstrained latents.

        Batch shape ``()`` for one dataset, ``(T,)`` for a batch of tasks; event ``(D,)``.
        Its ``status`` (:class:`~iai_prob.posterior_status.PosteriorStatus`) says
        whether it converged, the passes used and its PSIS ``k̂`` (see :meth:`solve`).
        """
        return self._posterior_and_layout(*args, **kwargs)[0]

    @torch.no_grad()
    @_serialized
    def padded_posterior(self, *args, sizes, **kwargs):
        """``q(z | D_t)`` for ``T`` datasets of unequal sizes stacked as one batch of tasks:
        the model's arguments hold ``(T, N, …)`` rows, of which task ``t``'s first
        ``sizes[t]`` are its data and the rest padding (fill it with copies of a valid
        row, so that every ``log p`` is finite; it weighs nothing).

        The answer of each task is the one :meth:`posterior` gives it alone (the same
        context subset, the same convergence phase; equal to float precision), so
        datasets of many sizes (``iai infer --group``) need one call per padded size
        instead of one per size. Batch shape ``(T,)``; ``status`` as :meth:`posterior`'s.
        Learned mini-batch passes (:meth:`refine`) need datasets of equal sizes.
        """
        task = self._prepared(*args, **kwargs)
        task = task._replace(data=task.data.padded(sizes))
        return self._answer(task, *self.solve(task))

    @torch.no_grad()
    @_serialized
    def precompile(self, *args, **kwargs):
        """Compile the log joint's kernels for this dataset's shapes now, and return its
        :meth:`posterior`.

        Without it a shape is traced after a few dozen evaluations and compiled after a
        few hundred (:mod:`~iai_prob.inference.compiled_log_joint`: about the tenth to
        twentieth posterior of one shape), so one-off calls never wait for TorchInductor.
        Call it once before many datasets (or groups) of one shape, as NumPyro compiles
        a ``jit``-ted function at its first call: it costs seconds once (less when
        TorchInductor's on-disk cache already holds the kernels), and the posteriors of
        that shape then run several times faster. A kernel that cannot be compiled keeps
        the traced replay; ``IAI_COMPILE_LOG_JOINT=0`` turns compiling off.
        """
        with compiling_now():
            return self._posterior_and_layout(*args, **kwargs)[0]

    def _flat_distribution(self, state: RefinementState, layout: LatentLayout, family=None):
        family = family or self._require_refiner().family
        if layout.num_tasks is None:
            return family.distribution(state.loc[0], state.precision[0])
        return family.distribution(state.loc, state.precision)

    @torch.no_grad()
    @_serialized
    def median(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Posterior median of each global site: ``T(μ)`` (per task when batched)."""
        posterior, layout = self._posterior_and_layout(*args, **kwargs)
        return _constrained(posterior.mean, layout)

    @torch.no_grad()
    @_serialized
    def sample(self, *args, num_samples: int = 1000, **kwargs) -> dict[str, torch.Tensor]:
        """``num_samples`` posterior draws of each global site, constrained, by site name:
        shape ``(num_samples, [T,] *event_shape)``.

        One solve (:meth:`posterior`, with its status and warnings) and then sampling:
        ``z_s = μ + L ε_s`` (``L Lᵀ = Λ⁻¹``) with ``ε_s`` from a generator seeded by the
        guide's ``seed``, so a call is a function of its data; each draw is mapped to the
        sites' supports.
        """
        check_positive_int("num_samples", num_samples)
        posterior, layout = self._posterior_and_layout(*args, **kwargs)
        loc = posterior.mean
        generator = torch.Generator(device=loc.device).manual_seed(self.config["seed"] + 4)
        noise = torch.randn(
            (num_samples, *loc.shape), dtype=loc.dtype, device=loc.device, generator=generator
        )
        scale_tril = getattr(posterior, "scale_tril", None)
        if scale_tril is None:  # a diagonal family: independent normals
            draws = loc + posterior.stddev * noise
        else:
            draws = loc + (scale_tril @ noise.unsqueeze(-1)).squeeze(-1)
        return _constrained(draws, layout)

    @torch.no_grad()
    @_serialized
    def quantiles(
        self, quantiles, *args, num_samples: int = 4096, **kwargs
    ) -> dict[str, torch.Tensor]:
        """Marginal quantiles of each global site, stacked on a new dim 0.

        For elementwise bijections (real, positive, interval supports) the map is monotone
        in each coordinate, so the ``q``-quantile is exactly ``T(μ_i + σ_i Φ⁻¹(q))``. For
        the others (simplex, ...) it is estimated from ``num_samples`` seeded draws.

        :raises ValueError: for a probability outside ``[0, 1]`` or NaN (before any work).
        """
        levels = check_probabilities("quantiles", quantiles)
        check_positive_int("num_samples", num_samples)
        posterior, layout = self._posterior_and_layout(*args, **kwargs)
        return self.quantiles_of(posterior, layout, levels, num_samples=num_samples)

    @torch.no_grad()
    @_serialized
    def quantiles_of(
        self, posterior, layout: LatentLayout, quantiles, *, num_samples: int = 4096
    ) -> dict[str, torch.Tensor]:
        """:meth:`quantiles` of an answer already computed: ``posterior`` over the joint
        unconstrained latents of ``layout`` (e.g. :meth:`padded_posterior`'s, batch
        ``(T,)``)."""
        levels = check_probabilities("quantiles", quantiles)
        scale = posterior.variance.sqrt()
        levels = torch.as_tensor(levels, dtype=scale.dtype, device=scale.device)
        normal_quantiles = dist.Normal(0.0, 1.0).icdf(levels).reshape((-1,) + (1,) * scale.dim())
        result = _constrained(posterior.mean + scale * normal_quantiles, layout)
        if not all(site.is_elementwise for site in layout.sites):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config["seed"])
                draws = posterior.sample((num_samples,))
            for site, value, _ in layout.unpack(draws):
                if not site.is_elementwise:
                    result[site.name] = torch.quantile(value, levels, dim=0)
        return result

    @torch.no_grad()
    @_serialized
    def refinement_trace(
        self, *args, num_steps: int | None = None, num_samples: int = 16, **kwargs
    ) -> list[RefinementStep]:
        """The state ``λ_k`` and a Monte Carlo ELBO (summed over tasks) after every step."""
        task = self._prepared(*args, **kwargs)
        family = self._require_refiner().family
        generator = torch.Generator().manual_seed(self.config["seed"] + 2)
        steps = []
        for k, (state, info) in enumerate(self.trajectory(task, num_steps=num_steps)):
            value = elbo(
                state,
                family,
                task.log_joint,
                task.data,
                num_samples=num_samples,
                generator=generator,
            )
            steps.append(RefinementStep(k, state, info, value))
        return steps

    @torch.no_grad()
    @_serialized
    def refine(
        self,
        x,
        y=None,
        *,
        passes: int = 1,
        batch_size: int | None = None,
        num_points: int | None = None,
    ):
        """Stream over a dataset, one refinement step per mini-batch, and return ``q``.

        ``x, y`` are tensors (the dataset in memory, split into mini-batches of
        ``batch_size``) or ``x`` is an iterable of ``(x_b, y_b)`` mini-batches that need not
        fit in memory; then ``num_points`` (the total ``N``) is required, and for
        ``passes > 1`` the iterable must be re-iterable (a list, a ``DataLoader``, or a
        callable returning a fresh iterator). Memory is constant in ``N``. A stream's
        batches are used as they come (``batch_size`` applies to tensors only), and a pass
        that does not add up to ``num_points`` raises ``ValueError``.

        The learned passes are followed by the convergence phase (:meth:`solve`); over a
        stream each of its full-data steps is a pass over the stream (a one-shot iterator
        cannot be read again: its answer is the learned pass's, with a warning).
        """
        if int(passes) != passes or passes < 1:
            raise ValueError(f"passes must be a positive integer, got {passes!r}")
        if torch.is_tensor(x):
            task = self._prepared(x, y)
            batch_size = batch_size or self.config["batch_size"]
            num_steps = passes * math.ceil(task.data.num_points / batch_size)
            return self._answer(task, *self.solve(task, num_steps=num_steps, batch_size=batch_size))
        return self._refine_stream(x, passes=passes, num_points=num_points)

    def _refine_stream(self, batches: Iterable, *, passes: int, num_points: int | None):
        if num_points is None or int(num_points) != num_points or num_points < 1:
            raise ValueError(
                "refine() over an iterable of mini-batches needs num_points=N, the dataset's "
                f"total size (got {num_points!r})"
            )
        make_iterator = batches if callable(batches) else lambda: iter(batches)
        reiterable = callable(batches) or iter(batches) is not batches
        if passes > 1 and not reiterable:
            raise ValueError(
                "passes > 1 needs a re-iterable (a list, a DataLoader or a callable returning "
                "an iterator); got a one-shot iterator"
            )
        refiner, state, layout, steps_per_pass = None, None, None, 0
        for _ in range(passes):
            streamed, steps_per_pass = 0, 0
            for x_batch, y_batch in make_iterator():
                task = self._prepared(x_batch, y_batch)
                task.data.total_points = int(num_points)
                refiner, layout = self.refiner, task.layout
                if state is None:
                    state = refiner.init(task.data)
                state, _ = refiner.step(state, task.data, task.log_joint)
                log_joint = task.log_joint
                streamed += task.data.num_points
                steps_per_pass += 1
            if state is not None and streamed != num_points:
                raise ValueError(
                    f"refine() streamed {streamed} points in a pass but was told num_points="
                    f"{num_points}; the N/|B| scaling needs the true dataset size"
                )
        if state is None:
            raise ValueError("refine() got no mini-batches")
        if self.convergence is None or torch.is_grad_enabled():
            return self._flat_distribution(state, layout)
        if not reiterable:
            warnings.warn(
                "refine() got a one-shot iterator, which the convergence phase cannot read "
                "again: the posterior is the learned pass's, unchecked; pass a list, a "
                "DataLoader or a callable returning an iterator",
                PosteriorWarning,
                stacklevel=3,
            )
            return self._answer_of(state, None, layout)
        dtype = self._phase_dtype(state)

        def chunks():
            for x_batch, y_batch in make_iterator():
                task = self._prepared(x_batch, y_batch)
                task.data.total_points = int(num_points)
                yield task.data.to_dtype(dtype)

        full = FullData(chunks, log_joint, int(num_points))
        batched = layout.num_tasks is not None
        return self._answer_of(*self._converged(state, full, steps_per_pass, batched), layout)

    @_serialized
    def polish(
        self,
        x,
        y=None,
        steps: int = 200,
        *,
        learning_rate: float = 0.01,
        num_samples: int = 8,
        progress: bool = False,
    ):
        """Semi-amortized polishing from the amortized posterior: see
        :func:`iai_prob.inference.polish.polish`."""
        from iai_prob.inference.polish import polish

        task = self._prepared(x, y)
        with torch.no_grad():
            start, _ = self.solve(task)
        best, family = polish(
            task,
            start,
            steps,
            learning_rate=learning_rate,
            num_samples=num_samples,
            progress=progress,
            seed=self.config["seed"],
        )
        return self._flat_distribution(best, task.layout, family=family)

    # ----------------------------------------------------------- checkpoints
    def save(self, path, **card) -> None:
        """Write ``path`` (safetensors weights) and its JSON card; see :mod:`.checkpoint`."""
        save_guide(self, path, **card)

    @classmethod
    def load(cls, path, model, *, device=None) -> IterativeAmortizedGuide:
        """Load a guide saved with :meth:`save` for ``model``; refuses another model.

        The card is checked (:func:`~iai_prob.guide_card.read_guide_checkpoint`) before the guide
        it configures is built, and the guide against the card and the weights' header
        (:func:`~.checkpoint.restore_guide`) before any weight is read."""
        checked = read_guide_checkpoint(path)
        return restore_guide(build_from_card(cls, model, checked), checked, device=device)


def load_guide(path, model, *, device=None) -> IterativeAmortizedGuide:
    """:meth:`IterativeAmortizedGuide.load`: the guide saved at ``path``, for ``model``."""
    return IterativeAmortizedGuide.load(path, model, device=device)


def load_family_guide(path, *, device=None) -> IterativeAmortizedGuide:
    """The guide of a checkpoint trained for a task family, built for the family its card
    names (checked first on the ``meta`` device:
    :func:`~.checkpoint.family_of_checkpoint`); the card is read and its hashes checked
    once."""
    checked = read_guide_checkpoint(path)
    family = family_of_checkpoint(checked)
    guide = build_from_card(IterativeAmortizedGuide, family, checked)
    return restore_guide(guide, checked, device=device)
