"""Meta-training in JAX: ``fit`` learns the guide's encoder and update rule with optax.

The twin of :func:`iai_prob.inference.fit` with the same options. Each step draws
``tasks_per_step`` tasks with ``N ~ U{num_points}`` points from a task family's
simulator (or a user model's prior predictive, :mod:`iai_prob.numpyro.sources`),
refines ``λ_0 … λ_K`` over ``1 … max_passes`` passes, and minimizes the mean
over steps of ``−ELBO(q_{λ_k})`` (``"reverse_kl"``), ``−log q_{λ_k}(z_true)``
(``"forward_kl"``) or their sum (``"mixed"``) (Mittal et al. 2025, §3: a loss on every
refinement step; greedy training stops gradients between steps).

One compilation serves the whole run: every step simulates ``hi`` points and masks the
``hi − N`` extra ones, and the mini-batch schedule is padded to the largest number of
steps, the missing ones being no-ops (``lax.cond``) that carry no loss. Checkpoints hold
the guide in the shared format (``guide.safetensors`` + ``.json``, loadable by PyTorch)
and the training state (``last``: parameters, optax state, step, losses); every step's
tasks and noise are keyed by ``(seed, step)``, so the same seed gives the same run bit
for bit and a resumed run reproduces the uninterrupted one. As in PyTorch, the folder
holds one run (:mod:`iai_prob.training_folder`: locked while training, and resuming
refuses another model or other settings).

Validation, as in PyTorch (:mod:`iai_prob.validation_history`): ``validation_tasks``
held-out tasks are drawn once from the training source, ``N`` spread over
``num_points`` (:func:`~iai_prob.validation_history.validation_sizes`), with a key of
their own (``(seed, 2³¹ − 2)``, which no step's key ``(seed, step)`` reaches, so the
training draws and losses are the same with validation on or off). The guide is scored
on them with the training objective averaged over ``λ_0 … λ_K`` of ``max_passes``
passes, its median over the tasks (one compiled function, the same noise at every call)
before the first step, every ``validate_every`` steps and at the end. The progress bar
shows the latest score and :attr:`FitResult.validation` keeps them; the best parameters
travel with the training state, the folder's guide is the best one, ``fit`` returns the
best (the end-of-call ones if they score at least as well), ``early_stopping=patience``
stops after that many validations without a new best, and a final guide that scores
worse than the untrained one gives a one-line ``UserWarning``.

Several JAX processes (``jax.distributed.initialize``, a mesh of ``devices`` across them)
run the same steps on the same global batch; process 0 alone writes ``checkpoint_dir``
and shows the progress bar, and a resume that the processes do not all see is refused
in one line.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from iai_prob.fit_options import check_fit_options, run_settings
from iai_prob.guide_card import model_identity
from iai_prob.numpyro.checkpoint import read_checkpoint, save_guide, write_checkpoint
from iai_prob.numpyro.objectives import kl_to_exact, task_losses
from iai_prob.numpyro.refinement import init, step
from iai_prob.numpyro.sharding import task_mesh
from iai_prob.numpyro.xla_guard import serial_task_limit
from iai_prob.training_folder import (
    RunMismatchError,
    callable_identity,
    check_same_run,
    find_training_state,
    flat_identity,
    lock_folder,
    make_folder,
    model_run_identity,
    saved_identity,
)
from iai_prob.validation_history import (
    ValidationHistory,
    ValidationSchedule,
    validation_score,
    validation_sizes,
)

__all__ = ["FitResult", "fit"]

_BEST_PREFIX = "best."
_VALIDATION_INDEX = 2**31 - 2


@dataclass
class FitResult:
    """What :func:`fit` did: per-step losses, the KL trace where exact, the time, the wall
    time of each step of this call (the first includes compilation; validations are not
    counted), the returned ``params`` (NumPyro's params dict: the best by validation,
    or the last if they score at least as well), the validation history (untrained,
    scheduled, best and final scores) and whether early stopping ended the run."""

    losses: list[float] = field(default_factory=list)
    kls: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    skipped: int = 0
    params: dict | None = None
    step_seconds: list[float] = field(default_factory=list)
    validation: ValidationHistory = field(default_factory=ValidationHistory)
    stopped_early: bool = False


def _padded_schedule(key, num_points, capacity, batch_size, passes, max_steps):
    """Indices ``(max_steps, B)``, validity and step validity for ``N = num_points`` valid
    points among ``capacity`` (traced ``N``): per pass a fresh permutation of the valid
    points split in ``⌈N/B⌉`` batches whose sizes differ by at most one."""
    num_batches = jnp.ceil(num_points / batch_size).astype(jnp.int32)
    base, extra = num_points // num_batches, num_points % num_batches
    steps = jnp.arange(max_steps)
    pass_index, chunk = steps // num_batches, steps % num_batches
    keys = jax.random.split(key, max_steps)

    def permutation(k):
        scores = jax.random.uniform(k, (capacity,))
        return jnp.argsort(jnp.where(jnp.arange(capacity) < num_points, scores, 2.0))

    permutations = jax.vmap(permutation)(keys)[pass_index]  # one per pass (key per pass)
    start = chunk * base + jnp.minimum(chunk, extra)
    size = base + (chunk < extra)
    offsets = jnp.arange(batch_size)
    rows = jnp.minimum(start[:, None] + offsets, capacity - 1)
    index = jnp.take_along_axis(permutations, rows, axis=1)
    mask = offsets[None, :] < size[:, None]
    valid_step = steps < passes * num_batches
    return index.astype(jnp.int32), mask & valid_step[:, None], valid_step


def _make_loss(guide, log_joint, *, objective, greedy, num_samples, batch_size, max_steps):
    static = guide._static

    def loss_fn(arrays, data, true_z, num_points, passes, key):
        refiner = eqx.combine(arrays, static)
        schedule_key, noise_key = jax.random.split(key)
        capacity = data.size
        index, mask, valid_step = _padded_schedule(
            schedule_key, num_points, capacity, batch_size, passes, max_steps
        )
        context = data.subset(jnp.arange(min(capacity, refiner.options.context_size)))
        state = init(refiner, context)

        def per_step_loss(state, k):  # (T,)
            key = jax.random.fold_in(noise_key, k)
            return task_losses(
                objective,
                state.loc,
                state.precision,
                log_joint,
                data,
                key,
                true_z,
                num_samples=num_samples,
            )

        def body(carry, inputs):
            state, total, count = carry
            batch_index, batch_mask, valid, k = inputs
            if greedy:
                state = jax.tree_util.tree_map(jax.lax.stop_gradient, state)

            def advance(state):
                return step(refiner, state, data.subset(batch_index, batch_mask), log_joint)[0]

            new = jax.lax.cond(valid, advance, lambda s: s, state)
            loss = jnp.where(valid, per_step_loss(new, k + 1), 0.0)
            return (new, total + loss, count + valid), None

        start = (state, per_step_loss(state, 0), jnp.asarray(1.0))
        steps = jnp.arange(max_steps)
        (final, total, count), _ = jax.lax.scan(body, start, (index, mask, valid_step, steps))
        per_task = total / count
        return per_task.mean(), (final, per_task)

    return loss_fn


def _check_serial_lapack(latent_dim: int, tasks_per_device: int) -> None:
    """Refuse a CPU training step whose batched LAPACK calls could deadlock XLA's pool.

    A training step differentiates through the refinement of all its tasks at once, so,
    unlike :meth:`IterativeAmortizedGuide.run`, it cannot refine them in chunks; with
    more tasks per device than :func:`~iai_prob.numpyro.xla_guard.serial_task_limit`
    allows, jaxlib 0.10.2 hung for good (1,024 tasks of ``D = 8`` on 2 cores).
    """
    limit = serial_task_limit(latent_dim)
    if limit is not None and tasks_per_device > limit:
        raise ValueError(
            f"tasks_per_step gives {tasks_per_device} tasks per device, more than {limit}, "
            f"the most tasks of a {latent_dim}-dimensional latent whose batched LAPACK "
            "calls stay on one thread; on the CPU larger batches can deadlock XLA's thread "
            "pool (see iai_prob.numpyro.xla_guard). Use tasks_per_step <= "
            f"{limit} per device, or more devices"
        )


def _training_tensors(params, opt_state, best=None) -> dict:
    """The training state's arrays: ``params.*``, ``optimizer.*`` and, if any, the best
    parameters by validation so far, ``best.*``."""
    tensors = {
        f"params.{i}": np.asarray(v) for i, v in enumerate(jax.tree_util.tree_leaves(params))
    }
    for i, leaf in enumerate(jax.tree_util.tree_leaves(opt_state)):
        tensors[f"optimizer.{i}"] = np.asarray(leaf)
    if best is not None:
        for i, leaf in enumerate(jax.tree_util.tree_leaves(best)):
            tensors[f"{_BEST_PREFIX}{i}"] = np.asarray(leaf)
    return tensors


def _trained_only(optimizer: optax.GradientTransformation, arrays):
    """``optimizer`` on the refiner's learned arrays only: a standardized refiner's prior
    location and scale (``prior_loc``, ``prior_scale``; PyTorch keeps them as buffers,
    outside its parameters) get no update at all, so that an optimizer that changes
    parameters on its own (weight decay, ``optax.adamw``) cannot move them."""
    if arrays.prior_loc is None:
        return optimizer
    learned = jax.tree_util.tree_map(lambda _: True, arrays)
    learned = eqx.tree_at(lambda tree: (tree.prior_loc, tree.prior_scale), learned, (False, False))
    return optax.masked(optimizer, learned)


def _check_every_process_resumes_at(step: int) -> None:
    """Of several JAX processes (``jax.distributed.initialize``), refuse in one line a
    resume that they do not all start from the same step (a ``checkpoint_dir`` that one
    machine sees and another does not): their replicated parameters would differ."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    steps = np.asarray(multihost_utils.process_allgather(np.asarray(step, np.int64)))
    if steps.min() != steps.max():
        raise ValueError(
            f"the {jax.process_count()} JAX processes disagree on the step to resume from "
            "(every process must see the same checkpoint_dir; on several machines, a shared "
            f"filesystem): from {int(steps.min())} to {int(steps.max())}"
        )


def _masked_data(guide, x, y, size, capacity):
    """The prepared data of ``capacity`` simulated points of which the first ``size``
    (traced) count: the others are masked out."""
    data = guide.prepare(x, y).data
    valid = jnp.arange(capacity) < size
    return eqx.tree_at(
        lambda d: (d.mask, d.total_points), data, (valid, jnp.asarray(size).astype(x.dtype))
    ), valid


def _validation_key(seed: int):
    """The validation tasks' and scores' own key: ``(seed, 2³¹ − 2)``, apart from every
    step's ``(seed, step)`` and from the key that builds the guide, ``(seed, 2³¹ − 1)``."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), _VALIDATION_INDEX)


class _ValidationTasks:
    """A fixed set of held-out tasks, drawn once, and the guide's score on them (the JAX
    twin of :class:`iai_prob.inference.evaluation.ValidationTasks`).

    Each batch of :func:`~iai_prob.validation_history.validation_sizes` is simulated at
    the training capacity ``high`` with its first ``N`` points valid, as a training step
    does, so the scoring function compiles once per batch size (once for the default
    64 tasks in four batches of 16).
    """

    def __init__(self, guide, tasks, layout, loss_fn, *, sizes, high, max_passes, key, mesh):
        self.num_tasks = sum(count for count, _ in sizes)
        task_key, self._noise_key = jax.random.split(key)
        self.batches = []
        for index, (count, points) in enumerate(sizes):
            theta, x, y = tasks.sample(jax.random.fold_in(task_key, index), count, high)
            self.batches.append((count, mesh.replicate((theta, x, y, jnp.asarray(points)))))

        @jax.jit
        def batch_score(arrays, theta, x, y, size, key):
            data, _ = _masked_data(guide, x, y, size, high)
            true_z = layout.pack(theta, batch_ndim=1)
            return loss_fn(arrays, data, true_z, size, max_passes, key)[1][1]

        self._batch_score = batch_score

    def score(self, arrays) -> float:
        """The training objective averaged over ``λ_0 … λ_K`` of ``max_passes`` passes,
        per task, and its median over the tasks
        (:func:`~iai_prob.validation_history.validation_score`; the same noise at every
        call). Lower is better."""
        losses = []
        for index, (_, (theta, x, y, size)) in enumerate(self.batches):
            key = jax.random.fold_in(self._noise_key, index)
            losses.extend(np.asarray(self._batch_score(arrays, theta, x, y, size, key)).tolist())
        return validation_score(losses)


def fit(
    guide,
    tasks,
    *,
    steps: int = 1000,
    tasks_per_step: int = 32,
    num_points: Sequence[int] = (16, 256),
    objective: str = "reverse_kl",
    greedy: bool = True,
    max_passes: int = 2,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    num_samples: int = 8,
    clip_norm: float = 10.0,
    max_skipped: int = 50,
    params: dict | None = None,
    checkpoint_dir=None,
    checkpoint_every: int = 100,
    resume: bool = True,
    seed: int = 0,
    progress: bool = True,
    devices=None,
    validation_tasks: int = 64,
    validate_every: int = 50,
    early_stopping: int | None = None,
) -> FitResult:
    """Meta-train ``guide`` on ``tasks`` (see module docstring).

    ``tasks`` is a task family of :mod:`iai_prob.models` (run under NumPyro) or a user
    model's prior predictive, :class:`~iai_prob.numpyro.sources.PriorPredictiveTasks`.
    Collections of real datasets (the PyTorch ``DatasetCollection``) are not supported in JAX.

    Options as :func:`iai_prob.inference.fit`; ``optimizer`` is an optax transformation
    (default ``adam(learning_rate)`` after clipping the global norm to ``clip_norm``) and
    ``params`` continues from given parameters (e.g. a pretrained guide's). ``devices``
    (a number of devices, a list of them or a 1-D mesh) shards each step's tasks over
    them, data-parallel (:mod:`iai_prob.numpyro.sharding`); default: one device.
    ``validation_tasks`` (``0``: none, the last parameters are returned),
    ``validate_every`` and ``early_stopping`` as in PyTorch (module docstring). Returns a
    :class:`FitResult` whose ``params`` are the best by validation.
    """
    arguments = dict(locals())  # fit's arguments by name, before anything else is bound
    from iai_prob.models.base import TaskFamily
    from iai_prob.numpyro.sources import PriorPredictiveTasks

    low, high = check_fit_options(arguments)
    if isinstance(tasks, TaskFamily):
        tasks = tasks.on("numpyro")
    if not isinstance(tasks, TaskFamily | PriorPredictiveTasks):
        raise ValueError(
            "tasks must be a task family of iai_prob.models (a simulator) or "
            "iai_prob.numpyro.sources.PriorPredictiveTasks(model, covariates); "
            f"got {tasks!r}"
        )
    batch_size = guide.config["batch_size"]
    if guide.config["num_steps"] is not None:
        raise ValueError("fit trains guides with num_steps=None (passes over the data)")
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    writer = jax.process_index() == 0  # of several JAX processes, the first writes
    with ExitStack() as held:
        if folder is not None and writer:
            make_folder(folder)
            held.enter_context(lock_folder(folder))
        mesh = task_mesh(devices, tasks_per_step)
        root = jax.random.PRNGKey(seed)
        _, x, y = tasks.sample(jax.random.fold_in(root, 2**31 - 1), tasks_per_step, high)
        task = guide.prepare(x, y)
        _check_serial_lapack(task.layout.latent_dim, tasks_per_step // mesh.size)
        if guide._static is None:
            guide._setup_prototype(x, y)
        if params is None:
            params = guide.params_of(guide.build(*guide.dims))
        arrays = params[guide.param_name]
        custom_optimizer = optimizer is not None
        optimizer = _trained_only(
            optimizer
            or optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate)),
            arrays,
        )
        opt_state = optimizer.init(arrays)
        result = FitResult()
        settings = {
            **run_settings(arguments),
            "learning_rate": None if custom_optimizer else learning_rate,
        }
        identity = _run_identity(guide, tasks, custom_optimizer, settings)
        last = find_training_state(folder) if folder is not None and resume else None
        best = None
        if last is not None:
            arrays, opt_state, best = _load_training(last, arrays, opt_state, result, identity)
        _check_every_process_resumes_at(result.steps)
        arrays, opt_state, best = mesh.replicate((arrays, opt_state, best))
        budget = {"steps": steps, **settings, "backend": "jax", "early_stopping": early_stopping}
        max_steps = max_passes * math.ceil(high / batch_size)
        loss_fn = _make_loss(
            guide,
            task.log_joint,
            objective=objective,
            greedy=greedy,
            num_samples=num_samples,
            batch_size=batch_size,
            max_steps=max_steps,
        )
        exact = tasks.has_exact_posterior and all(site.is_real for site in task.layout.sites)

        @jax.jit
        def train_step(arrays, opt_state, key):
            data_key, size_key, pass_key, loss_key = jax.random.split(key, 4)
            size = jax.random.randint(size_key, (), low, high + 1)
            passes = jax.random.randint(pass_key, (), 1, max_passes + 1)
            theta, x, y = tasks.sample(data_key, tasks_per_step, high)
            theta, x, y = mesh.shard_tasks((theta, x, y))
            data, valid = _masked_data(guide, x, y, size, high)
            true_z = task.layout.pack(theta, batch_ndim=1)
            (loss, (final, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                arrays, data, true_z, size, passes, loss_key
            )
            finite = jnp.isfinite(loss)
            updates, new_opt_state = optimizer.update(grads, opt_state, arrays)
            new_arrays = optax.apply_updates(arrays, updates)
            arrays = jax.tree_util.tree_map(
                lambda n, o: jnp.where(finite, n, o), new_arrays, arrays
            )
            opt_state = jax.tree_util.tree_map(
                lambda n, o: jnp.where(finite, n, o), new_opt_state, opt_state
            )
            kl = jnp.nan
            if exact:
                x_valid = jnp.where(valid[None, :, None], x, 0.0)
                y_valid = jnp.where(valid[None, :], y, 0.0)
                kl = jnp.median(
                    kl_to_exact(final.loc, final.precision, tasks.exact_posterior(x_valid, y_valid))
                )
            return arrays, opt_state, loss, kl

        validation = None
        if validation_tasks:
            validation = _ValidationTasks(
                guide,
                tasks,
                task.layout,
                loss_fn,
                sizes=validation_sizes(validation_tasks, low, high),
                high=high,
                max_passes=max_passes,
                key=_validation_key(seed),
                mesh=mesh,
            )
            result.validation.num_tasks = validation.num_tasks
        history = result.validation
        shown = progress and writer  # one bar for several processes
        bar = tqdm(total=steps, initial=result.steps, disable=not shown, desc="fit (jax)")
        started = time.perf_counter() - result.seconds
        schedule = ValidationSchedule(
            history,
            None if validation is None else lambda: validation.score(arrays),  # the current
            every=validate_every,
            patience=early_stopping,
        )
        if schedule.begin(result.steps):
            best = arrays
            bar.set_postfix({"val": f"{history.latest:.4g}"})
        while result.steps < steps and not schedule.stop:
            key = jax.random.fold_in(root, result.steps)
            step_started = time.perf_counter()
            arrays, opt_state, loss, kl = train_step(arrays, opt_state, key)
            loss_value = float(loss)
            result.step_seconds.append(time.perf_counter() - step_started)
            if not math.isfinite(loss_value):
                result.skipped += 1
                if result.skipped > max_skipped:
                    raise FloatingPointError(
                        f"fit: {result.skipped} non-finite losses (more than max_skipped="
                        f"{max_skipped}); lower the learning rate or check the model"
                    )
            result.steps += 1
            result.losses.append(loss_value)
            postfix = {"loss": f"{loss_value:.4g}"}
            if exact and (result.steps % 10 == 0 or result.steps == steps):
                result.kls.append((result.steps, float(kl)))
                postfix["kl"] = f"{float(kl):.3g}"
            validated = schedule.after_step(result.steps, steps)
            if validated.new_best:
                best = arrays
            if validated.scored:
                postfix["val"] = f"{history.latest:.4g}"
            bar.set_postfix(postfix)
            bar.update(1)
            result.seconds = time.perf_counter() - started
            checkpoint = result.steps % checkpoint_every == 0 or validated.at_end
            if folder is not None and writer and checkpoint:
                _save_training(folder / "last", arrays, opt_state, result, budget, identity, best)
                keep_last, saved = history.weights_to_save(validated.at_end, best is not None)
                save_guide(
                    guide,
                    {guide.param_name: arrays if keep_last else best},
                    folder / "guide",
                    budget=budget,
                    seconds=result.seconds,
                    **history.guide_card_field(saved),
                )
        bar.close()
        result.stopped_early = schedule.stop
        if schedule.end(result.steps, best is not None):
            arrays = best
        result.params = {guide.param_name: arrays}
    message = history.worse_than_untrained("fit (jax)")
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=2)
    return result


def _run_identity(guide, tasks, custom_optimizer: bool, settings: dict) -> dict:
    """What defines a run (:mod:`iai_prob.training_folder`), flat, as the card stores it."""
    if hasattr(tasks, "covariates"):  # a user model's prior predictive
        source = {
            "prior_predictive": callable_identity(tasks.model),
            "covariates": callable_identity(tasks.covariates),
        }
    else:
        source = {"family": tasks.name, "config": tasks.config()}
    return flat_identity(
        {
            "kind": "training",
            "backend": "jax",
            "model": model_run_identity(model_identity(guide), guide.model),
            "layout": guide.layout_signature,
            "guide": guide.config,
            "tasks": source,
            "optimizer": "custom" if custom_optimizer else "adam",
            **settings,
        }
    )


def _save_training(
    path: Path, arrays, opt_state, result: FitResult, budget, identity, best=None
) -> None:
    """Write the training state ``path`` (``last``): parameters, optax state, the best
    parameters by validation so far, and a card with the step, losses, validation history,
    budget and run identity."""
    card = {
        "kind": "training",
        "backend": "jax",
        "step": result.steps,
        "losses": result.losses,
        "kls": result.kls,
        "seconds": result.seconds,
        "skipped": result.skipped,
        "validation": result.validation.to_card(),
        "budget": budget,
        "run": identity,
    }
    write_checkpoint(path, _training_tensors(arrays, opt_state, best), card)


def _load_training(path: Path, arrays, opt_state, result: FitResult, identity):
    """The saved parameters, optax state and best parameters by validation (``None``: none
    saved, e.g. a card of an earlier version) if ``path`` holds this run (else
    :class:`~iai_prob.training_folder.RunMismatchError`); fills ``result``."""
    tensors, card = read_checkpoint(path)
    check_same_run(path.parent, saved_identity(card), identity)
    saved_best = any(k.startswith(_BEST_PREFIX) for k in tensors)
    expected = _training_tensors(arrays, opt_state, arrays if saved_best else None)
    shapes = {k: list(np.shape(v)) for k, v in expected.items()}
    found = {k: list(np.shape(v)) for k, v in tensors.items()}
    differing = sorted(k for k in shapes.keys() | found.keys() if shapes.get(k) != found.get(k))
    if differing:
        raise RunMismatchError(
            path.parent,
            [(f"weight {k} of shape", found.get(k), shapes.get(k)) for k in differing[:2]],
        )
    params_leaves, params_def = jax.tree_util.tree_flatten(arrays)
    opt_leaves, opt_def = jax.tree_util.tree_flatten(opt_state)
    arrays = jax.tree_util.tree_unflatten(
        params_def, [jnp.asarray(tensors[f"params.{i}"]) for i in range(len(params_leaves))]
    )
    opt_state = jax.tree_util.tree_unflatten(
        opt_def, [jnp.asarray(tensors[f"optimizer.{i}"]) for i in range(len(opt_leaves))]
    )
    best = None
    if saved_best:
        best = jax.tree_util.tree_unflatten(
            params_def,
            [jnp.asarray(tensors[f"{_BEST_PREFIX}{i}"]) for i in range(len(params_leaves))],
        )
    result.steps, result.losses, result.seconds = card["step"], card["losses"], card["seconds"]
    result.kls = [tuple(kl) for kl in card["kls"]]
    result.skipped = card["skipped"]
    result.validation = ValidationHistory.from_card(card.get("validation"))
    return arrays, opt_state, best
