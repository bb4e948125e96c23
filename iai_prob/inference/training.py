"""Meta-training: ``fit`` learns the guide's encoder and update rule across tasks.

Each training step draws ``tasks_per_step`` tasks with ``N ~ U{num_points}`` points
(from a task family's simulator, a Pyro model's prior predictive, or a collection of
real datasets), runs the refinement ``λ_0 … λ_K`` on each, and minimizes the mean over
steps ``k = 0 … K`` of the per-step loss (Mittal et al. 2025, §3: a loss on every
refinement step). The loss is ``−ELBO(q_{λ_k})`` (``"reverse_kl"``, needs only the
model), ``−log q_{λ_k}(z_true)`` (``"forward_kl"``, needs simulated latents) or their
sum (``"mixed"``). Greedy training detaches ``λ_k`` before each step, so memory is
constant in ``K``; ``greedy=False`` back-propagates through the whole trajectory.
``K`` itself is drawn from ``1 … max_passes`` passes over the data, so the learned
step sizes see many step counts.

In the explicit regime the model itself has learned parameters (a decoder ``f_γ``,
:func:`~iai_prob.inference.checkpoint.learnable_model`): they are optimized jointly
with the guide's on the same loss. An :class:`~iai_prob.inference.implicit.ImplicitPredictor`
(implicit regime) is trained by the same loop on its own per-step predictive loss
(its ``training_loss``).

Reproducibility: every random number of a step comes from generators seeded by
``(seed, step)``. The tasks, ``N``, the number of passes and the reverse-KL noise are
drawn from an explicit ``torch.Generator``; everything else that draws from torch's
global generators (Pyro's ``pyro.sample`` in the model and the log joint, sampled
linearization points, dropout in a learned model, the exact-KL check, a user's
covariates) runs inside ``torch.random.fork_rng`` with the global CPU generator (and
the CUDA one of ``device``) seeded by a hash of ``(seed, step)``, and the caller's
global state is restored afterwards. Threading a generator through every draw is not
possible (Pyro and user models draw from the global one), and seeding the global
generator once would make a step's draws depend on every earlier draw. The weights of
a guide that ``fit`` builds (one not yet called on data) are drawn the same way from
``seed``. Same seed, same machine, same thread count: the losses and weights are
identical bit for bit (on CUDA, only under ``torch.use_deterministic_algorithms``).
On ``W > 1`` processes (``parallel``) the step's ``N`` still comes from ``(seed, step)``,
and each process draws its own tasks and noise from ``(seed, step, rank, W)``
(:mod:`.data_parallel`): the same seed on the same number of processes gives the same run.

Checkpoints (safetensors + JSON, :mod:`.checkpoint`) hold the guide, the optimizer
state and the step; ``resume=True`` continues from the last one, and because every
step is a function of ``(seed, step)`` and the state, a resumed run reproduces the
uninterrupted one. The folder holds one run (:mod:`iai_prob.training_folder`): it is
locked while training, and resuming refuses a run of another model or with other
settings (:class:`~iai_prob.training_folder.RunMismatchError`).

Validation (:mod:`iai_prob.validation_history`): ``validation_tasks`` held-out tasks are
drawn once, from the training source with ``N`` spread over ``num_points`` and a seed of
their own (the training draws are untouched), and the guide is scored on them with the
training objective of its state refined over ``max_passes`` passes (``−ELBO`` per task
for ``"reverse_kl"``; the median over the tasks,
:meth:`~iai_prob.inference.evaluation.ValidationTasks.score`) before the first step,
every ``validate_every`` steps and at the end; the progress bar shows the latest score
and :attr:`FitResult.validation` keeps them. The best weights so far travel with the
training state, the folder's guide is the best one, ``fit`` returns the best (the
end-of-call weights if they score at least as well), ``early_stopping=patience`` stops
after that many validations without a new best, and a final guide that scores worse than
the untrained one gives a one-line warning. Pyro's ``Encountered NaN/inf: log_prob_sum``
warnings, which a trial state with invalid parameters (e.g. a huge scale) raises before
the refinement's safeguard rejects it, are not shown: such trial steps are rejected; a
task whose loss or whose gradient is not finite (its simulated data overflow the
likelihood at the ELBO's draws) is left out of its step and counted in
:attr:`FitResult.dropped_tasks`, and a training step whose loss or gradient is still not
finite is skipped and counted in :attr:`FitResult.skipped`.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from iai_prob.fit_options import check_fit_options, run_settings
from iai_prob.inference.checkpoint import learnable_model
from iai_prob.inference.data_parallel import SINGLE_PROCESS, DataParallel
from iai_prob.inference.evaluation import ValidationTasks, refinement_steps
from iai_prob.inference.numerics import flush_denormals
from iai_prob.inference.objectives import kl_to_exact, task_losses
from iai_prob.inference.sources import TaskBatch, as_task_source
from iai_prob.inference.training_state import (
    FitResult,
    resume_training,
    run_identity,
    save_training,
)
from iai_prob.refinement_state import RefinementError
from iai_prob.training_folder import lock_folder, make_folder
from iai_prob.validation_history import ValidationSchedule, validation_sizes

__all__ = ["fit"]


def _trainable(guide) -> nn.ModuleDict:
    """What ``fit`` optimizes: ``{"guide": …}`` and, if the model learns, ``{"model": …}``."""
    if hasattr(guide, "training_loss"):  # an ImplicitPredictor is its own learned module
        return nn.ModuleDict({"guide": guide})
    modules = {"guide": guide.refiner}
    learned = learnable_model(guide)
    if learned is not None:
        modules["model"] = learned
    return nn.ModuleDict(modules)


class _StepLoss(NamedTuple):
    loss: torch.Tensor  # the mean over tasks and refinement steps
    task: object  # the prepared task (None for an implicit predictor)
    state: object  # the last state
    finite_tasks: torch.Tensor | None  # (T,): whose losses are finite
    states: list  # every state whose loss counts, their gradients kept after backward


def _step_loss(guide, batch: TaskBatch, budget: dict, generator) -> _StepLoss:
    """The step's loss (the mean over tasks and refinement steps), the prepared task, the
    states and which tasks' losses are finite (``None`` for an implicit predictor)."""
    objective, greedy, max_passes = budget["objective"], budget["greedy"], budget["max_passes"]
    num_samples = budget["num_samples"]
    if hasattr(guide, "training_loss"):
        loss = guide.training_loss(
            batch.args, greedy=greedy, max_passes=max_passes, generator=generator
        )
        return _StepLoss(loss, None, None, None, [])
    task = guide.prepare(*batch.args)
    family = guide.refiner.family
    true_z = None
    if objective != "reverse_kl":
        true_z = task.layout.pack(batch.theta, batch_ndim=1).to(task.data.features.device)
    passes = int(torch.randint(1, max_passes + 1, (), generator=generator))
    num_steps = refinement_steps(guide, task, passes)
    total, states = 0.0, []
    for state, _ in guide.trajectory(task, num_steps=num_steps, greedy=greedy):
        for tensor in (state.loc, state.precision):
            if tensor.requires_grad:
                tensor.retain_grad()
        states.append(state)
        total = total + task_losses(
            objective, state, family, task, true_z, num_samples=num_samples, generator=generator
        )
    loss = (total / len(states)).mean()
    return _StepLoss(loss, task, states[-1], torch.isfinite(total.detach()), states)


def _tasks_with_non_finite_gradients(states: list) -> torch.Tensor | None:
    """``(T,)``: the tasks whose loss has a non-finite gradient in one of their states
    (``None`` when no state kept one): a loss can be finite where its gradient is not (a
    negative binomial's ``concentration / rate`` once ``rate`` underflows)."""
    bad = None
    for state in states:
        for tensor in (state.loc, state.precision):
            if tensor.grad is not None:
                rows = ~torch.isfinite(tensor.grad.flatten(1)).all(-1)
                bad = rows if bad is None else bad | rows
    return bad


def _backward(guide, trainable, batch, budget, generator, result, tries: int = 8):
    """``(loss, batch, task, state, finite)``: the step's loss, back-propagated into
    ``trainable``, on ``batch`` less the tasks left out, ``finite`` when the loss and the
    gradient are.

    A task whose loss or whose gradient is not finite (its simulated data overflow the
    likelihood, or its gradient, at the ELBO's draws: a Poisson rate past float range
    under a wide prior) is left out and counted in ``result.dropped_tasks``, and the step
    retaken on the others, rather than voided for all: masking it out of the loss would
    still send ``0 · inf = NaN`` through the shared weights' gradients. A retake draws new
    noise, so it can find more such tasks; every retake leaves out at least one, and up to
    ``tries`` attempts are made (one raw-count run needed four; with three, two of its
    three steps were skipped on one CPU and none on another).
    """
    for attempt in range(tries):
        step = _step_loss(guide, batch, budget, generator)
        bad = None if step.finite_tasks is None else ~step.finite_tasks
        finite = bool(torch.isfinite(step.loss))
        if finite:
            step.loss.backward()
            grads = [p.grad for p in trainable.parameters() if p.grad is not None]
            finite = not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
            if not finite:
                bad = _tasks_with_non_finite_gradients(step.states)
        if finite or bad is None or not bad.any() or bad.all() or attempt == tries - 1:
            return step.loss, batch, step.task, step.state, finite
        result.dropped_tasks += int(bad.sum())
        batch = batch.tasks(~bad)
        for parameter in trainable.parameters():
            parameter.grad = None
    raise AssertionError("unreachable")  # pragma: no cover


def _exact_kl(guide, batch: TaskBatch, task, state) -> float | None:
    family = getattr(guide, "family", None)
    if task is None or family is None or not family.has_exact_posterior or batch.theta is None:
        return None
    with torch.no_grad():
        exact = family.exact_posterior(*batch.args)
        order = tuple(site.name for site in family.latent_sites)
        kl = kl_to_exact(state.detach(), guide.refiner.family, task.layout, exact, site_order=order)
    return float(kl.median())


def _step_seeds(seed: int, step: int, parallel: DataParallel = SINGLE_PROCESS) -> tuple[int, int]:
    """Seeds of step ``step`` (``-1``: building the guide) on ``parallel``'s process:
    ``(tasks, global)``.

    One process: ``tasks`` seeds the explicit generator (the formula of earlier versions,
    so their runs keep their numbers); ``global`` seeds torch's global generators, from a
    hash so that the two streams never coincide (a CPU generator uses only a seed's low 32
    bits). Rank ``r`` of ``W > 1`` processes: both from a hash of ``(seed, step, r, W)``,
    so every process draws its own tasks and noise, and a run is reproduced by the same
    seed on the same number of processes.
    """
    if parallel.world_size > 1:
        key = f"iai_prob.fit:{seed}:{step}:rank {parallel.rank} of {parallel.world_size}"
        digest = hashlib.sha256(key.encode()).digest()
        return int.from_bytes(digest[8:16], "little"), int.from_bytes(digest[:8], "little")
    digest = hashlib.sha256(f"iai_prob.fit:{seed}:{step}".encode()).digest()
    return (seed * 1_000_003 + step) % 2**64, int.from_bytes(digest[:8], "little")


def _validation_seed(seed: int) -> int:
    """The validation tasks' and scores' own seed: a stream apart from every step's."""
    digest = hashlib.sha256(f"iai_prob.fit.validation:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@contextmanager
def _quiet_non_finite_log_probs() -> Iterator[None]:
    """Hide Pyro's ``Encountered NaN/+inf: log_prob_sum at site …`` warnings: the values
    they flag are handled (a refinement trial rejected, a training step skipped and
    counted, a validation score of ``inf``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"Encountered (NaN|\+inf|-inf): log_prob", category=UserWarning
        )
        yield


@contextmanager
def _global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's global CPU generator (and ``device``'s CUDA one) seeded
    by ``seed``; the caller's generator states are restored afterwards."""
    cuda = []
    if device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


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
    optimizer: torch.optim.Optimizer | None = None,
    learning_rate: float = 1e-3,
    num_samples: int = 8,
    clip_norm: float = 10.0,
    max_skipped: int = 50,
    device=None,
    checkpoint_dir=None,
    checkpoint_every: int = 100,
    resume: bool = True,
    seed: int = 0,
    progress: bool = True,
    parallel: DataParallel = SINGLE_PROCESS,
    guide_card: dict | None = None,
    validation_tasks: int = 64,
    validate_every: int = 50,
    early_stopping: int | None = None,
) -> FitResult:
    """Meta-train ``guide`` on ``tasks`` (see module docstring).

    :param guide: an :class:`~iai_prob.inference.IterativeAmortizedGuide` (its model's
        learned parameters, if any, are trained too) or an
        :class:`~iai_prob.inference.implicit.ImplicitPredictor`. A guide not yet called
        on data is built here, its initial weights drawn from ``seed``.
    :param tasks: a :class:`~iai_prob.models.TaskFamily`, a Pyro model with a covariate
        sampler (:class:`~iai_prob.inference.sources.PriorPredictiveTasks`), or a sequence
        of real datasets ``[(x, y), …]`` (:class:`~iai_prob.inference.sources.DatasetCollection`).
    :param int steps: total optimizer steps (including those of a resumed run), ``>= 1``.
    :param num_points: ``(lo, hi)``: each step's ``N`` is uniform on ``lo … hi``.
    :param str objective: ``"reverse_kl"``, ``"forward_kl"`` or ``"mixed"``.
    :param bool greedy: stop gradients between refinement steps.
    :param int max_passes: each step refines over ``1 … max_passes`` passes of the data.
    :param checkpoint_dir: the training folder: ``last.json`` and the weights it names
        (training state) and ``guide.safetensors``/``guide.json`` (the guide) are written
        there every ``checkpoint_every`` steps and at the end. It holds one run: it is
        locked while training (a second process gets
        :class:`~iai_prob.training_folder.FolderInUseError`) and resuming refuses a run of
        another model or with other settings
        (:class:`~iai_prob.training_folder.RunMismatchError`).
    :param bool resume: continue the run in ``checkpoint_dir`` if there is one; ``False``
        starts again, replacing the old state at the new run's first checkpoint.
    :param int seed: seeds every random draw (tasks, noise, a new guide's weights):
        the same seed gives the same run, bit for bit.
    :param float clip_norm: the gradient's global norm is clipped to this.
    :param int max_skipped: steps whose loss or gradient is not finite, or whose
        refinement left a non-positive-definite state, are skipped and counted in
        ``FitResult.skipped``; past this many, ``fit`` raises ``FloatingPointError``.
    :param parallel: a :class:`~iai_prob.inference.data_parallel.DataParallel` from
        :func:`~iai_prob.inference.data_parallel.init_from_environment` under ``torchrun``:
        each process trains on its slice of every step's ``tasks_per_step`` tasks.
    :param dict guide_card: fields added to the card of every ``guide`` checkpoint
        (e.g. the command that trained it).
    :param int validation_tasks: held-out tasks drawn once (their own seed, ``N`` spread
        over ``num_points``) and scored before training, every ``validate_every`` steps
        and at the end (module docstring); the best weights are kept and returned, and a
        final guide worse than the untrained one warns. ``0``: no validation, the last
        weights are returned. Every process of a ``parallel`` run scores all of them.
    :param int validate_every: steps between validations.
    :param early_stopping: ``None`` (default) trains all ``steps``; an integer ``p`` stops
        after ``p`` validations without a new best (:attr:`FitResult.stopped_early`). Off
        by default because a guide's held-out score can worsen for a while and then
        recover (300 steps worse than untrained, better by 1,500 in one measured run):
        keeping the best weights already protects the result without cutting it short.
    :returns: a :class:`FitResult`.
    """
    arguments = dict(locals())  # fit's arguments by name, before anything else is bound
    low, high = check_fit_options(arguments)
    if hasattr(guide, "training_loss") and objective != "reverse_kl":
        raise ValueError(
            "an ImplicitPredictor is trained on its own predictive negative log-likelihood; "
            f"objective={objective!r} applies to guides only"
        )
    source = as_task_source(tasks)
    if objective != "reverse_kl" and not source.has_latents:
        raise ValueError(f"objective={objective!r} needs simulated latents; {source} has none")
    device = torch.device(device) if device is not None else torch.device("cpu")
    parallel.local_tasks(tasks_per_step)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    with ExitStack() as held:
        if folder is not None and parallel.is_writer:
            make_folder(folder)
            held.enter_context(lock_folder(folder))
        held.enter_context(_quiet_non_finite_log_probs())
        generator = torch.Generator().manual_seed(seed)
        if getattr(guide, "refiner", False) is None:
            with _global_rng(_step_seeds(seed, -1)[1], device):
                _build_on_a_valid_draw(guide, source, max(low, 2), generator, device)
        trainable = _trainable(guide).to(device)
        optimizer = optimizer or torch.optim.Adam(trainable.parameters(), lr=learning_rate)
        settings = run_settings(arguments)
        identity = run_identity(guide, source, optimizer, settings)
        result = FitResult()
        best = None
        if folder is not None and resume:
            best = resume_training(folder, trainable, optimizer, result, device, identity)
        parallel.check_same(
            result.steps,
            "the step to resume from (every process must see the same checkpoint_dir; on "
            "several machines, a shared filesystem)",
        )
        parallel.broadcast_parameters(trainable)  # rank 0's weights everywhere, as DDP
        resumed = result.steps > 0
        if resumed and result.world_size != parallel.world_size and parallel.is_writer:
            warnings.warn(_world_size_changed(result, parallel.world_size), UserWarning, 2)
        result.world_size = parallel.world_size
        budget = {
            "steps": steps,
            **settings,
            "learning_rate": identity["learning_rate"],
            "max_skipped": max_skipped,
            "early_stopping": early_stopping,
            "world_size": parallel.world_size,
        }
        validation = None
        if validation_tasks:
            with _global_rng(_validation_seed(seed), device):
                validation = ValidationTasks(
                    source,
                    validation_sizes(validation_tasks, low, high),
                    torch.Generator().manual_seed(_validation_seed(seed)),
                    device,
                )
            result.validation.num_tasks = validation.num_tasks
        trainable.train()
        with flush_denormals():
            _train_loop(
                guide,
                trainable,
                source,
                optimizer,
                result,
                generator=generator,
                device=device,
                folder=folder,
                checkpoint_every=checkpoint_every,
                budget=budget,
                identity=identity,
                guide_card=guide_card or {},
                progress=progress and parallel.is_writer,
                parallel=parallel,
                validation=validation,
                best=best,
            )
        trainable.eval()
    message = result.validation.worse_than_untrained()
    if message is not None and parallel.is_writer:
        warnings.warn(message, UserWarning, stacklevel=2)
    return result


def _train_loop(
    guide,
    trainable,
    source,
    optimizer,
    result,
    *,
    generator,
    device,
    folder,
    checkpoint_every,
    budget,
    identity,
    guide_card,
    progress,
    parallel,
    validation,
    best,
):
    """The optimization loop of :func:`fit` (arguments as there; ``budget`` holds the
    settings, ``validation`` the :class:`~iai_prob.inference.evaluation.ValidationTasks`
    or ``None``, ``best`` the best weights of a resumed run): each step runs in
    :func:`_global_rng` seeded by ``(seed, step)``, each validation in its own seed."""
    steps, seed = budget["steps"], budget["seed"]
    history = result.validation
    bar = tqdm(total=steps, initial=result.steps, disable=not progress, desc="fit")
    started = time.perf_counter() - result.seconds
    schedule = ValidationSchedule(
        history,
        _validator(guide, trainable, validation, budget, device),
        every=budget["validate_every"],
        patience=budget["early_stopping"],
    )
    if schedule.begin(result.steps):
        best = _snapshot(trainable)
        bar.set_postfix({"val": f"{history.latest:.4g}"})
    low, high = budget["num_points"]
    while result.steps < steps and not schedule.stop:
        task_seed, global_seed = _step_seeds(seed, result.steps)
        generator.manual_seed(task_seed)
        size = int(torch.randint(low, high + 1, (), generator=generator))
        if parallel.world_size > 1:  # the step's N is common; the tasks and noise are the rank's
            task_seed, global_seed = _step_seeds(seed, result.steps, parallel)
            generator.manual_seed(task_seed)
        with _global_rng(global_seed, device):
            loss_value, kl = _train_step(
                guide,
                trainable,
                source,
                optimizer,
                result,
                budget,
                size,
                generator,
                device,
                parallel,
            )
        result.steps += 1
        result.losses.append(loss_value)
        postfix = {"loss": f"{loss_value:.4g}"}
        if kl is not None:
            result.kls.append((result.steps, kl))
            postfix["kl"] = f"{kl:.3g}"
        validated = schedule.after_step(result.steps, steps)
        if validated.new_best:
            best = _snapshot(trainable)
        if validated.scored:
            postfix["val"] = f"{history.latest:.4g}"
        bar.set_postfix(postfix)
        bar.update(1)
        result.seconds = time.perf_counter() - started
        if (
            folder is not None
            and parallel.is_writer
            and (result.steps % checkpoint_every == 0 or validated.at_end)
        ):
            save_training(folder / "last", trainable, optimizer, result, budget, identity, best)
            keep_last, saved = history.weights_to_save(validated.at_end, best is not None)
            with _weights(trainable, None if keep_last else best):
                guide.save(
                    folder / "guide",
                    budget={**budget, "seconds": result.seconds},
                    final_loss=loss_value,
                    **history.guide_card_field(saved),
                    **guide_card,
                )
    bar.close()
    result.stopped_early = schedule.stop
    if schedule.end(result.steps, best is not None):
        trainable.load_state_dict(best)


def _world_size_changed(result: FitResult, world_size: int) -> str:
    """The one line of a run resumed on another number of processes: what changes."""
    return (
        f"fit: resuming a run trained on {result.world_size} process(es) up to step "
        f"{result.steps} on {world_size}: every process draws its own tasks and noise, so "
        f"the steps from here are not those of an uninterrupted {result.world_size}-process "
        "run (the same distribution of tasks and the same expected update, other draws)"
    )


def _validator(guide, trainable, validation, budget, device):
    """``validate() -> score`` of the current weights on ``validation`` (eval mode, its own
    seed: the training draws are untouched); ``None`` without validation tasks."""
    if validation is None:
        return None

    def validate() -> float:
        seed = _validation_seed(budget["seed"])
        trainable.eval()
        try:
            with _global_rng(seed, device):
                return validation.score(
                    guide,
                    budget["objective"],
                    max_passes=budget["max_passes"],
                    num_samples=budget["num_samples"],
                    seed=seed,
                )
        finally:
            trainable.train()

    return validate


def _snapshot(trainable) -> dict[str, torch.Tensor]:
    """A copy of the trained weights (the best so far)."""
    return {name: value.detach().clone() for name, value in trainable.state_dict().items()}


@contextmanager
def _weights(trainable, weights: dict | None) -> Iterator[None]:
    """Run the block with ``weights`` loaded (``None``: as they are), then put the current
    ones back exactly."""
    if weights is None:
        yield
        return
    current = _snapshot(trainable)
    trainable.load_state_dict(weights)
    try:
        yield
    finally:
        trainable.load_state_dict(current)


def _build_on_a_valid_draw(guide, source, num_points, generator, device, tries: int = 20):
    """Build the guide on one simulated task, drawing again (up to ``tries`` times) while
    the model's likelihood refuses the draw (a simulator overflow, see
    :func:`_train_step`)."""
    for attempt in range(tries):
        first = source.sample(1, num_points, generator)
        args = [a.to(device) if torch.is_tensor(a) else a for a in first.args]
        try:
            return guide._setup_prototype(*args)
        except ValueError as error:
            if "support" not in str(error) or attempt == tries - 1:
                raise


def _train_step(
    guide, trainable, source, optimizer, result, budget, size, generator, device, parallel
):
    """One optimizer step on this process's tasks of ``size`` points (skipped when not
    finite anywhere); returns the loss (the mean over processes) and the exact KL (every
    10 steps and at the last, where the family has an exact posterior)."""
    local = parallel.local_tasks(budget["tasks_per_step"])
    batch = source.sample(local, size, generator).to(device)
    optimizer.zero_grad()
    try:
        loss, batch, task, state, finite = _backward(
            guide, trainable, batch, budget, generator, result
        )
    except (RefinementError, torch.linalg.LinAlgError):  # a state left the PD cone
        loss, task, state, finite = torch.tensor(torch.nan), None, None, False
    except ValueError as error:
        if "support" not in str(error):
            raise
        # a simulated batch its own likelihood refuses: a simulator that overflowed (e.g.
        # torch.poisson at rates past 1e19 returns negative counts) under a wide prior
        loss, task, state, finite = torch.tensor(torch.nan), None, None, False
    if parallel.all_finite(finite):
        parallel.average_gradients(trainable.parameters())
        torch.nn.utils.clip_grad_norm_(trainable.parameters(), budget["clip_norm"])
        optimizer.step()
    else:
        result.skipped += 1
        if result.skipped > budget["max_skipped"]:
            raise FloatingPointError(
                f"fit: {result.skipped} steps with a non-finite loss or gradient, a failed "
                "refinement or simulated data outside the likelihood's support (more than "
                f"max_skipped={budget['max_skipped']}); lower the learning rate, check the "
                "model and its priors' scale, or train in float64 "
                "(torch.set_default_dtype(torch.float64) before building the guide): a model "
                "on raw counts or raw units can have posterior precisions float32 cannot factor"
            )
    kl = None
    step = result.steps + 1
    if state is not None and (step % 10 == 0 or step == budget["steps"]):
        kl = _exact_kl(guide, batch, task, state)
    return parallel.mean(float(loss.detach())), kl
