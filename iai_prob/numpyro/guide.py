"""``IterativeAmortizedGuide`` for NumPyro: an amortized, iteratively refined guide.

The twin of :class:`iai_prob.inference.IterativeAmortizedGuide` with the same keyword
arguments. For a dataset ``D`` it computes ``q_λ(z | D)`` over the joint unconstrained
global latents by

    λ_0 = init_φ(D),     λ_{k+1} = step_φ(λ_k, B_k),   k = 0 … K−1,

(one ``lax.scan``, :mod:`iai_prob.numpyro.refinement`), samples ``z ~ q_{λ_K}`` as an
auxiliary site and emits each global site as ``Delta(T(z))`` with the Jacobian as log
density, like NumPyro's ``AutoContinuous``. The networks are an equinox module
registered as :func:`numpyro.contrib.module.eqx_module` does (its array leaves under
``"{prefix}$refiner$params"``, built lazily), so the parameters live in NumPyro's params
dict and the object holds no arrays; it works with ``SVI`` (``Trace_ELBO``,
``TraceEnum_ELBO``), ``Predictive`` and ``psis_diagnostic``. The eager helpers
(:meth:`posterior`, :meth:`median`, …) take the params dict explicitly, as NumPyro's
autoguides do.

Converged by default: every answer with concrete params (:meth:`posterior`,
:meth:`median`, :meth:`quantiles`, :meth:`sample_posterior`, and the guide's draws under
``Predictive`` or ``psis_diagnostic``) finishes with the convergence phase
(:mod:`iai_prob.numpyro.convergence`, as the PyTorch guide: :meth:`solve`) and carries a
:class:`~iai_prob.posterior_status.PosteriorStatus` (``posterior(...).status``,
``guide.last_status``); under ``SVI``'s gradient the guide draws from the learned
``λ_K``. :meth:`run` and :meth:`refinement_trace` are the learned trajectory.

The method is the PyTorch guide's (Mittal, Mahajan, Lajoie, Pezeshki 2025,
arXiv:2510.11471, after Marino, Yue, Mandt, ICML 2018); the options, their checks and
the checkpoint card are written once for both (:class:`~iai_prob.guide_options.GuideOptions`).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import Counter, OrderedDict
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from iai_prob.checks import check_probabilities
from iai_prob.guide_card import build_from_card, read_guide_checkpoint
from iai_prob.guide_options import GuideOptions
from iai_prob.latent_layout import LatentLayout, group_plates
from iai_prob.numpyro.checkpoint import restore_guide, save_guide
from iai_prob.numpyro.convergence import finish
from iai_prob.numpyro.log_joint import LogJoint
from iai_prob.numpyro.posteriors import get_posterior_family
from iai_prob.numpyro.refinement import (
    RefinementState,
    Refiner,
    Schedule,
    check_state,
    minibatch_schedule,
    refine,
)
from iai_prob.numpyro.sites import discover_layout, site_priors
from iai_prob.numpyro.task_data import (
    TaskData,
    call_signature,
    check_finite_features,
    read_task_data,
    read_task_data_compiled,
    trace_model,
)
from iai_prob.numpyro.xla_guard import serial_task_limit
from iai_prob.posterior_families import family_options
from iai_prob.posterior_status import PosteriorStatus, warn_if_unreliable
from iai_prob.prior_standardization import PRIOR_DRAWS, PRIOR_SEED, prior_location_scale
from iai_prob.refiner_options import RefinerOptions

__all__ = [
    "IMPLEMENTED_UPDATES",
    "TRACE_COUNTS",
    "IterativeAmortizedGuide",
    "PreparedTask",
    "load_guide",
]

IMPLEMENTED_UPDATES = ("natural_gradient",)
"""The update rules the port implements: the learned natural-gradient step (the PyTorch
guide's MAML and Meta-SGD baselines, :data:`~iai_prob.guide_options.GRADIENT_RULES`, are
refused by name)."""

TRACE_COUNTS: Counter = Counter()
"""How many times each jitted refinement function was traced (compiled), by name; a
test checks that datasets of the same shape reuse the compilation."""


MAX_PREPARED = 256
"""Call signatures whose layout a guide keeps (:meth:`IterativeAmortizedGuide.prepare`)."""


@functools.lru_cache(maxsize=64)
def _seeded_schedule(num_points: int, batch_size: int, num_steps: int, seed: int) -> Schedule:
    """The mini-batch schedule of a call, a function of its sizes and seed alone: computed
    once per shape (its random permutations cost milliseconds of eager dispatch), and
    concrete even when first asked for under a JAX trace (``SVI``), so the cache holds no
    tracer."""
    with jax.ensure_compile_time_eval():
        return minibatch_schedule(num_points, batch_size, num_steps, jax.random.PRNGKey(seed))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _distribution(family, loc, precision, batch_shape: tuple):
    """``q = N(μ, Λ⁻¹)`` of the tasks' states ``(T, D)``, ``(T, D, D)`` with batch shape
    ``batch_shape`` (``()``: the one task), built in one compiled call: eagerly, its
    dozen small operations cost milliseconds, more than the rest of an answer."""
    dim = loc.shape[-1]
    return family.distribution(
        loc.reshape(*batch_shape, dim), precision.reshape(*batch_shape, dim, dim)
    )


@functools.lru_cache(maxsize=64)
def _seeded_context(num_points: int, context_size: int, seed: int) -> jax.Array:
    """The one-shot encoder's context subset, once per ``(N, context size, seed)``
    (concrete under a trace, as :func:`_seeded_schedule`)."""
    with jax.ensure_compile_time_eval():
        return jax.random.permutation(jax.random.PRNGKey(seed), num_points)[:context_size]


class PreparedTask(NamedTuple):
    """A dataset read through the model: layout, data and the log-joint evaluator."""

    layout: LatentLayout
    data: TaskData
    log_joint: LogJoint


@eqx.filter_jit
def _compiled_refine(refiner, data, schedule, log_joint, context_index, key, trajectory):
    TRACE_COUNTS["refine"] += 1
    return refine(
        refiner,
        data,
        schedule,
        log_joint,
        context_index=context_index,
        key=key,
        trajectory=trajectory,
    )


def _join_tasks(parts, task_axis: int):
    """Concatenate chunks of tasks: leaves with a task axis along ``task_axis``; the others
    (step counts, the same in every chunk) from the first chunk."""

    def join(*leaves):
        if jnp.ndim(leaves[0]) <= task_axis:
            return leaves[0]
        return jnp.concatenate(leaves, axis=task_axis)

    return jax.tree_util.tree_map(join, *parts)


def _uses_enumeration(trace) -> bool:
    return any(
        site["type"] == "sample" and site["infer"].get("enumerate") == "parallel"
        for site in trace.values()
    )


class IterativeAmortizedGuide(GuideOptions):
    """Amortized guide ``q_φ(θ | D)`` refined over mini-batches of ``D`` (NumPyro).

    :param model: a NumPyro model whose global latents lie outside the data plate, or a
        :class:`~iai_prob.models.base.TaskFamily` (bound to NumPyro with
        ``family.on("numpyro")``, its ``model`` is used and it is kept as
        ``guide.family``).
    :param str prefix: prefix of the parameter name in NumPyro's params dict.

    The other keyword arguments are those of the PyTorch guide: ``family``, ``encoder``,
    ``num_steps`` (``None`` = one pass over the data), ``batch_size``, ``signals``,
    ``data_plate``, ``tasks_plate``, ``linearization``, ``num_particles``,
    ``context_size``, ``rank``, ``encoder_options``, ``featurize``, ``seed`` (seeds the
    mini-batch order, so a call is a function of its data), ``update``, ``inner_lr``,
    ``max_relinearizations`` and ``standardize`` (the start in prior units,
    :mod:`iai_prob.prior_standardization`).

    ``update`` accepts the PyTorch guide's names so that its checkpoints' cards read here,
    but the port implements the learned natural-gradient rule only: ``"maml"`` and
    ``"meta_sgd"`` (the optimization-based baselines of
    :mod:`iai_prob.inference.gradient_updates`) raise a ``ValueError`` saying so.

    ``convergence`` is the convergence phase that finishes every default answer
    (:class:`~iai_prob.convergence_settings.Convergence`, :mod:`.convergence`: safeguarded
    full-data steps to the fixed point, its cap and tolerance, the PSIS ``k̂`` draws);
    ``None`` returns the learned refinement's ``λ_K`` as is (one-shot speed, no guarantee,
    no status). Not part of the checkpoint: set ``guide.convergence`` after loading.
    :meth:`run` and :meth:`refinement_trace` always give the learned trajectory.

    :param options: the keyword options above, as
        :class:`~iai_prob.guide_options.GuideOptions` takes them.
    """

    implemented_updates = IMPLEMENTED_UPDATES

    def __init__(self, model, *, prefix: str = "iai", **options):
        self.prefix = prefix
        super().__init__(model, **options)

    def _attach_model(self, model) -> None:
        from iai_prob.models.base import TaskFamily

        task_family = model if isinstance(model, TaskFamily) else getattr(model, "__self__", None)
        self.family = None
        if isinstance(task_family, TaskFamily):  # the family itself or its model method
            self.family = task_family.on("numpyro")
            model = self.family.model
        self.model = model
        self.dims: tuple[int, int] | None = None  # (latent_dim, feature_dim) once built
        self._static = None  # the refiner's non-array part (structure, config)
        self._prior = None  # (m, s) of a standardized guide, read off its first dataset
        # call signature -> (layout, log joint), or None where the model must run eagerly;
        # the most recent MAX_PREPARED signatures
        self._prepared: OrderedDict = OrderedDict()

    # ------------------------------------------------------------------ setup
    @property
    def param_name(self) -> str:
        """The key of the refiner's parameters in NumPyro's params dict."""
        return f"{self.prefix}$refiner$params"

    def build(self, latent_dim: int, feature_dim: int) -> Refiner:
        """A freshly initialized refiner (seeded by ``seed``) for these dimensions."""
        config = self.config
        refiner = Refiner(
            get_posterior_family(config["family"], latent_dim, **family_options(config)),
            feature_dim,
            RefinerOptions.of_config(config),
            prior=self._prior,
            key=jax.random.PRNGKey(config["seed"]),
        )
        self.dims = (latent_dim, feature_dim)
        self._static = eqx.partition(refiner, eqx.is_inexact_array)[1]
        return refiner

    def params_of(self, refiner: Refiner) -> dict:
        """NumPyro's params dict holding ``refiner``'s arrays."""
        return {self.param_name: eqx.filter(refiner, eqx.is_inexact_array)}

    def refiner(self, params: dict) -> Refiner:
        """The refiner with the arrays of NumPyro's ``params``."""
        self._require_built()
        if self.param_name not in params:
            raise ValueError(
                f"params has no entry {self.param_name!r}; pass the dict returned by "
                "SVI / fit / pretrained.load"
            )
        return eqx.combine(params[self.param_name], self._static)

    def _require_built(self):
        if self._static is None:
            raise RuntimeError(
                "the guide has not seen the model yet: call init_params(rng_key, *args), run "
                "it under SVI, or train it with iai_prob.numpyro.fit"
            )

    def _setup_prototype(self, *args, **kwargs) -> PreparedTask:
        task = self.prepare(*args, **kwargs)
        if self._static is None:
            if self.config["standardize"]:
                trace = trace_model(self.model, args, kwargs)
                priors = site_priors(trace, task.layout, PRIOR_DRAWS, PRIOR_SEED)
                self._prior = prior_location_scale(task.layout, priors)
            self.build(task.layout.latent_dim, task.data.features.shape[-1])
            self.layout_signature = task.layout.signature()
        return task

    def init_params(self, *args, **kwargs) -> dict:
        """Build the guide from one dataset and return fresh parameters."""
        task = self._setup_prototype(*args, **kwargs)
        return self.params_of(self.build(task.layout.latent_dim, task.data.features.shape[-1]))

    def prepare(self, *args, **kwargs) -> PreparedTask:
        """Trace the model on ``*args, **kwargs`` and read its latent layout and data.

        The layout and log joint of a call signature (:func:`.task_data.call_signature`)
        are kept: a later call with the same shapes reads its data through one compiled
        call (:func:`.task_data.read_task_data_compiled`) instead of an eager model trace.
        """
        config = self.config
        key = call_signature(args, kwargs)
        known = self._prepared.get(key) if key is not None else None
        if known is not None:
            layout, log_joint = known
            try:
                data = read_task_data_compiled(
                    self.model,
                    tuple(args),
                    dict(kwargs),
                    config["data_plate"],
                    config["tasks_plate"],
                    self.featurize,
                )
            except jax.errors.JAXTypeError:  # the model needs concrete values: read eagerly
                self._prepared[key] = None
            else:
                check_finite_features(data.features)
                return PreparedTask(layout, data, log_joint)
        data, trace, tasks = read_task_data(self.model, args, kwargs, **self._reading())
        if tasks is not None:  # the layout is read off one task's trace
            task_args, task_kwargs = data.task(0)
            trace = trace_model(self.model, task_args, task_kwargs)
        layout = discover_layout(
            trace, data_plate=config["data_plate"], tasks_plate=config["tasks_plate"], tasks=tasks
        )
        built_for = None if self.dims is None else self.dims[1]
        self._check_dataset(layout, data.features.shape[-1], built_for)
        log_joint = LogJoint(self.model, layout, config["data_plate"], _uses_enumeration(trace))
        if key is not None and key not in self._prepared:
            self._prepared[key] = (layout, log_joint)
            while len(self._prepared) > MAX_PREPARED:
                self._prepared.popitem(last=False)
        return PreparedTask(layout, data, log_joint)

    # ------------------------------------------------------------- refinement
    def schedule(
        self, num_points: int, num_steps: int | None = None, batch_size: int | None = None
    ) -> Schedule:
        """The mini-batches of one call (seeded: a call is a function of its data)."""
        batch_size = batch_size or self.config["batch_size"]
        if num_steps is None:
            num_steps = self.config["num_steps"]
        if num_steps is None:
            num_steps = math.ceil(num_points / batch_size)
        return _seeded_schedule(
            num_points, min(batch_size, num_points), num_steps, self.config["seed"]
        )

    def context_index(self, num_points: int):
        """The seeded random context subset of the one-shot encoder (``None``: all points)."""
        context_size = self.config["context_size"]
        if num_points <= context_size:
            return None
        return _seeded_context(num_points, context_size, self.config["seed"] + 1)

    def padded_context_index(self, sizes) -> tuple[jax.Array, jax.Array]:
        """Per task of a padded batch of datasets of ``sizes`` ``(T,)`` rows: the context
        it gets alone (:meth:`context_index` of its ``N_t``, or its ``N_t`` points in
        order), as ``(index, valid)`` ``(T, C)`` arrays for :meth:`run`."""
        context_size = self.config["context_size"]
        sizes = np.asarray(sizes, int)
        width = min(context_size, int(sizes.max()))
        index = np.zeros((len(sizes), width), np.int32)
        valid = np.zeros((len(sizes), width), bool)
        for task, size in enumerate(sizes.tolist()):
            chosen = self.context_index(size)
            chosen = np.arange(size) if chosen is None else np.asarray(chosen)
            index[task, : len(chosen)], valid[task, : len(chosen)] = chosen, True
        return jnp.asarray(index), jnp.asarray(valid)

    def run(
        self,
        params: dict,
        task: PreparedTask,
        *,
        schedule: Schedule | None = None,
        context_index=None,
        num_steps: int | None = None,
        batch_size: int | None = None,
        trajectory: bool = False,
    ):
        """``(λ_0, λ_K or λ_1…λ_K, infos)`` for a prepared task (compiled once per shape).

        ``schedule`` and ``context_index`` default to the guide's seeded ones; pass them to
        reproduce another backend's mini-batch order.
        """
        refiner = self.refiner(params)
        num_points = task.data.size
        if schedule is None:
            schedule = self.schedule(num_points, num_steps, batch_size)
        sizes = task.data.task_points
        if sizes is not None and schedule.index.shape[0]:
            raise ValueError(
                "datasets of unequal sizes in one padded batch get the default answer (the "
                "encoder's start and the convergence phase), not learned mini-batch steps: "
                "refine them in batches of equal sizes"
            )
        if context_index is None:
            padded = sizes is not None
            context_index = (self.padded_context_index if padded else self.context_index)(
                np.asarray(sizes) if padded else num_points
            )
        key = None
        if self.config["linearization"] == "samples":
            key = jax.random.PRNGKey(self.config["seed"] + 3)
        chunk = serial_task_limit(task.layout.latent_dim)
        if chunk is None or task.data.num_tasks <= chunk:
            return _compiled_refine(
                refiner, task.data, schedule, task.log_joint, context_index, key, trajectory
            )
        # one chunk of tasks at a time, so that no LAPACK call waits on a busy thread pool
        # (see iai_prob.numpyro.xla_guard); each chunk is a function of its own tasks alone
        parts = []
        for start in range(0, task.data.num_tasks, chunk):
            tasks = slice(start, start + chunk)
            args, kwargs = task.data.task(tasks)
            part = self.prepare(*args, **kwargs)
            context = context_index
            if sizes is not None:  # the chunk's own padding
                part = part._replace(data=part.data.padded(np.asarray(sizes[tasks])))
            if isinstance(context_index, tuple):  # the chunk's own per-task contexts
                context = tuple(array[tasks] for array in context_index)
            parts.append(
                jax.block_until_ready(
                    _compiled_refine(
                        refiner, part.data, schedule, part.log_joint, context, key, trajectory
                    )
                )
            )
        initial, states, infos = zip(*parts, strict=True)
        return (
            _join_tasks(initial, task_axis=0),
            _join_tasks(states, task_axis=1 if trajectory else 0),
            _join_tasks(infos, task_axis=1),
        )

    def final_state(self, params: dict, task: PreparedTask, **options) -> RefinementState:
        """``λ_K`` for a prepared task."""
        return self.run(params, task, **options)[1]

    def solve(self, params: dict, task: PreparedTask, **options):
        """The default answer's state for a prepared task and its status: the convergence
        phase (:mod:`.convergence`) from the guide's refinement (:meth:`run`; ``options``
        are its keywords), with a
        :class:`~iai_prob.posterior_status.PosteriorStatus` (converged, passes, residual,
        PSIS ``k̂``) kept as ``guide.last_status``; one
        :class:`~iai_prob.posterior_status.PosteriorWarning` names the datasets that did
        not converge or whose ``k̂`` exceeds 0.7.

        The phase starts from the encoder's ``λ_0`` (its fixed point does not depend on
        the start) unless the learned steps are asked for: ``num_steps`` or ``schedule``
        given, or ``Convergence(refine_first=True)``. With ``guide.convergence = None``,
        or under a JAX transformation of the params or the data (``SVI``'s gradient: the
        phase is a per-dataset solver, not a path for gradients), it returns the learned
        ``λ_K`` and the status is ``None``.
        """
        rule = self.convergence
        leaves = jax.tree_util.tree_leaves((params, task.data))
        traced = any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)
        if rule is None or traced:
            state = self.final_state(params, task, **options)
            return (state if traced else check_state(state)), None
        learned = options.get("num_steps") is not None or options.get("schedule") is not None
        if not (learned or rule.refine_first):
            options = {**options, "num_steps": 0}  # from λ_0 (see Convergence.refine_first)
        state = check_state(self.final_state(params, task, **options))
        refiner = self._static
        state, phase = finish(
            state,
            task.data,
            task.log_joint,
            refiner.family,
            rule,
            refiner.options,
            seed=self.config["seed"] + 3,
        )
        batch_size = options.get("batch_size") or self.config["batch_size"]
        steps_per_pass = math.ceil(task.data.size / batch_size)
        learned_steps = int(state.step) - int(phase.steps.max())
        batched = task.layout.num_tasks is not None
        status = PosteriorStatus.of(
            converged=phase.converged,
            passes=phase.steps + learned_steps / steps_per_pass,
            full_steps=phase.steps,
            residual=phase.residual,
            khat=phase.khat,
            batched=batched,
        )
        self.last_status = status
        matched = rule.moment_match and refiner.family.name == "full_rank"
        warn_if_unreliable(
            status, max_steps=rule.max_steps, batched=batched, moment_matched=matched
        )
        return state, status

    def _batched_distribution(self, state: RefinementState, layout: LatentLayout):
        batch_shape = tuple(layout.batch_shape) if layout.num_tasks else ()
        return _distribution(self.refiner_family(), state.loc, state.precision, batch_shape)

    def refiner_family(self):
        self._require_built()
        return self._static.family

    # ------------------------------------------------------------------ NumPyro
    def __call__(self, *args, **kwargs):
        """Sample the global latents for the dataset in ``*args, **kwargs``."""
        task = self.prepare(*args, **kwargs) if self._static is not None else None
        if task is None:
            task = self._setup_prototype(*args, **kwargs)
        # as numpyro.contrib.module.eqx_module registers "{name}$params", but the initial
        # arrays are only built when NumPyro asks for them (not when params are substituted)
        arrays = numpyro.param(
            self.param_name, lambda _: self.params_of(self.build(*self.dims))[self.param_name]
        )
        params = {self.param_name: arrays}
        state, _ = self.solve(params, task)
        layout = task.layout
        posterior = self._batched_distribution(state, layout)
        result = {}
        plate = (
            numpyro.plate(self.config["tasks_plate"], layout.num_tasks, dim=layout.tasks_dim)
            if layout.num_tasks
            else contextlib.nullcontext()
        )
        with plate:
            latent = numpyro.sample(
                f"_{self.prefix}_latent", posterior, infer={"is_auxiliary": True}
            )
            for site, value, log_jacobian in layout.unpack(latent, model_shapes=True):
                with group_plates(numpyro.plate, site):
                    result[site.name] = numpyro.sample(
                        site.name,
                        dist.Delta(
                            value,
                            log_density=-log_jacobian,
                            event_dim=site.event_dim - len(site.plate_shape),
                        ),
                    )
        return result

    # ------------------------------------------------------------- user API
    def _posterior_and_layout(self, params, *args, schedule=None, context_index=None, **kwargs):
        task = self.prepare(*args, **kwargs)
        state, status = self.solve(params, task, schedule=schedule, context_index=context_index)
        distribution = self._flat_distribution(state, task.layout)
        distribution.status = status
        return distribution, task.layout

    def posterior(self, params: dict, *args, schedule=None, context_index=None, **kwargs):
        """``q(z | D)``: a NumPyro distribution over the flattened unconstrained latents.

        Batch shape ``()`` for one dataset, ``(T,)`` for a batch of tasks; event ``(D,)``.
        Its ``status`` (:class:`~iai_prob.posterior_status.PosteriorStatus`, also
        ``guide.last_status``) says whether it converged, the passes used and its PSIS
        ``k̂`` (see :meth:`solve`; ``None`` with ``guide.convergence = None``).
        ``schedule`` and ``context_index`` set the learned steps' mini-batches (:meth:`run`).
        Raises :class:`~iai_prob.numpyro.refinement.RefinementError` for a bad state.
        """
        return self._posterior_and_layout(
            params, *args, schedule=schedule, context_index=context_index, **kwargs
        )[0]

    def padded_posterior(self, params: dict, *args, sizes, **kwargs):
        """``q(z | D_t)`` for ``T`` datasets of unequal sizes stacked as one batch of tasks:
        the model's arguments hold ``(T, N, …)`` rows, of which task ``t``'s first
        ``sizes[t]`` are its data and the rest padding (copies of a valid row, so that
        every ``log p`` is finite; it weighs nothing). Each task's answer is the one
        :meth:`posterior` gives it alone, and one compilation serves every batch of the
        same ``(T, N)`` (the PyTorch guide's
        :meth:`~iai_prob.inference.IterativeAmortizedGuide.padded_posterior`)."""
        task = self.prepare(*args, **kwargs)
        task = task._replace(data=task.data.padded(sizes))
        state, status = self.solve(params, task)
        distribution = self._flat_distribution(state, task.layout)
        distribution.status = status
        return distribution

    def _flat_distribution(self, state: RefinementState, layout: LatentLayout):
        batch_shape = () if layout.num_tasks is None else (layout.num_tasks,)
        return _distribution(self.refiner_family(), state.loc, state.precision, batch_shape)

    def median(self, params: dict, *args, **kwargs) -> dict:
        """Posterior median of each global site: ``T(μ)`` (per task when batched)."""
        posterior, layout = self._posterior_and_layout(params, *args, **kwargs)
        return {site.name: value for site, value, _ in layout.unpack(posterior.mean)}

    def quantiles(self, params: dict, quantiles, *args, **kwargs) -> dict:
        """Marginal quantiles ``T(μ_i + σ_i Φ⁻¹(q))`` of each global site, stacked on dim 0
        (exact for elementwise bijections).

        :raises ValueError: for a probability outside ``[0, 1]`` or NaN (before any work).
        """
        levels = check_probabilities("quantiles", quantiles)
        posterior, layout = self._posterior_and_layout(params, *args, **kwargs)
        scale = jnp.sqrt(posterior.variance)
        levels = jnp.asarray(levels, scale.dtype)
        normal = dist.Normal(0.0, 1.0).icdf(levels).reshape((-1,) + (1,) * scale.ndim)
        return {
            site.name: value for site, value, _ in layout.unpack(posterior.mean + scale * normal)
        }

    def sample_posterior(self, rng_key, params: dict, *args, sample_shape=(), **kwargs) -> dict:
        """Draws of the global sites (constrained), ``sample_shape`` leading dims."""
        posterior, layout = self._posterior_and_layout(params, *args, **kwargs)
        latent = posterior.sample(rng_key, sample_shape)
        return {site.name: value for site, value, _ in layout.unpack(latent)}

    def refinement_trace(self, params: dict, *args, num_steps: int | None = None, **kwargs):
        """The states ``λ_0 … λ_K`` (a list of :class:`RefinementState`) and the infos."""
        task = self.prepare(*args, **kwargs)
        first, states, infos = self.run(params, task, num_steps=num_steps, trajectory=True)
        steps = [first]
        for k in range(states.loc.shape[0]):
            steps.append(jax.tree_util.tree_map(lambda leaf, k=k: leaf[k], states))
        return steps, infos

    # ----------------------------------------------------------- checkpoints
    def save(self, params: dict, path, **card):
        """Write ``path`` (safetensors) and its JSON card, loadable by both backends."""
        return save_guide(self, params, path, **card)

    @classmethod
    def load(cls, path, model):
        """``(guide, params)`` from a checkpoint of either backend, for ``model``: the card
        is checked (hashes, schema, model, layout, shapes against the weights' header)
        before anything it sizes is built."""
        checked = read_guide_checkpoint(path)
        return restore_guide(build_from_card(cls, model, checked), checked)


def load_guide(path, model):
    """:meth:`IterativeAmortizedGuide.load`: ``(guide, params)`` saved at ``path``, for
    ``model``."""
    return IterativeAmortizedGuide.load(path, model)
