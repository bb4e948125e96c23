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

Checkpoints (safetensors + JSON, :mod:`.checkpoint`) hold the guide, the optimizer
state and the step; ``resume=True`` continues from the last one, and because every
step's tasks and noise are seeded by ``(seed, step)`` a resumed run reproduces the
uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from iai_prob.inference.checkpoint import learnable_model, read_checkpoint, write_checkpoint
from iai_prob.inference.data_parallel import SINGLE_PROCESS, DataParallel
from iai_prob.inference.numerics import flush_denormals
from iai_prob.inference.objectives import OBJECTIVES, forward_kl, kl_to_exact, reverse_kl
from iai_prob.inference.refinement import RefinementError
from iai_prob.inference.sources import TaskBatch, as_task_source

__all__ = ["FitResult", "fit"]

_OPTIMIZER_PREFIX = "optimizer."


@dataclass
class FitResult:
    """What :func:`fit` did: per-step losses, the KL trace where exact, and the time."""

    losses: list[float] = field(default_factory=list)
    kls: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    skipped: int = 0


def _trainable(guide) -> nn.ModuleDict:
    """What ``fit`` optimizes: ``{"guide": …}`` and, if the model learns, ``{"model": …}``."""
    if hasattr(guide, "training_loss"):  # an ImplicitPredictor is its own learned module
        return nn.ModuleDict({"guide": guide})
    modules = {"guide": guide.refiner}
    learned = learnable_model(guide)
    if learned is not None:
        modules["model"] = learned
    return nn.ModuleDict(modules)


def _step_loss(guide, batch: TaskBatch, objective, greedy, max_passes, generator, num_samples):
    if hasattr(guide, "training_loss"):
        loss = guide.training_loss(
            batch.args, greedy=greedy, max_passes=max_passes, generator=generator
        )
        return loss, None, None
    task = guide.prepare(*batch.args)
    family = guide.refiner.family
    true_z = None
    if objective != "reverse_kl":
        true_z = task.layout.pack(batch.theta, batch_ndim=1).to(task.data.features.device)
    passes = int(torch.randint(1, max_passes + 1, (), generator=generator))
    num_steps = None
    if guide.config["num_steps"] is None:
        num_steps = passes * math.ceil(task.data.num_points / guide.config["batch_size"])
    total, count, state = 0.0, 0, None
    for state, _ in guide.trajectory(task, num_steps=num_steps, greedy=greedy):
        loss = 0.0
        if objective in ("reverse_kl", "mixed"):
            loss = loss + reverse_kl(
                state,
                family,
                task.log_joint,
                task.data,
                num_samples=num_samples,
                generator=generator,
            )
        if objective in ("forward_kl", "mixed"):
            loss = loss + forward_kl(state, family, true_z)
        total, count = total + loss, count + 1
    return total / count, task, state


def _exact_kl(guide, batch: TaskBatch, task, state) -> float | None:
    family = getattr(guide, "family", None)
    if task is None or family is None or not family.has_exact_posterior or batch.theta is None:
        return None
    with torch.no_grad():
        exact = family.exact_posterior(*batch.args)
        order = tuple(site.name for site in family.latent_sites)
        kl = kl_to_exact(state.detach(), guide.refiner.family, task.layout, exact, site_order=order)
    return float(kl.median())


def _save_training(path: Path, trainable, optimizer, result: FitResult, budget: dict) -> None:
    tensors = dict(trainable.state_dict())
    optimizer_state = optimizer.state_dict()
    scalars = {}
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{_OPTIMIZER_PREFIX}{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()  # for sources that use the global RNG
    card = {
        "kind": "training",
        "step": result.steps,
        "losses": result.losses,
        "kls": result.kls,
        "seconds": result.seconds,
        "skipped": result.skipped,
        "optimizer_param_groups": optimizer_state["param_groups"],
        "optimizer_scalars": scalars,
        "budget": budget,
    }
    write_checkpoint(path, tensors, card, versioned=True)  # crash-safe: old or new, never half


def _load_training(path: Path, trainable, optimizer, result: FitResult, device) -> None:
    tensors, card = read_checkpoint(path, device=device)
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors.pop("rng.torch").cpu())
    trainable.load_state_dict(
        {k: v for k, v in tensors.items() if not k.startswith(_OPTIMIZER_PREFIX)}
    )
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith(_OPTIMIZER_PREFIX):
            index, name = key[len(_OPTIMIZER_PREFIX) :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for key, value in card["optimizer_scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": card["optimizer_param_groups"]})
    result.steps, result.losses, result.seconds = card["step"], card["losses"], card["seconds"]
    result.kls = [tuple(kl) for kl in card["kls"]]
    result.skipped = card["skipped"]


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
) -> FitResult:
    """Meta-train ``guide`` on ``tasks`` (see module docstring).

    :param guide: an :class:`~iai_prob.inference.IterativeAmortizedGuide` (its model's
        learned parameters, if any, are trained too) or an
        :class:`~iai_prob.inference.implicit.ImplicitPredictor`.
    :param tasks: a :class:`~iai_prob.models.TaskFamily`, a Pyro model with a covariate
        sampler (:class:`~iai_prob.inference.sources.PriorPredictiveTasks`), or a sequence
        of real datasets ``[(x, y), …]`` (:class:`~iai_prob.inference.sources.DatasetCollection`).
    :param int steps: total optimizer steps (including those of a resumed run).
    :param num_points: ``(lo, hi)``: each step's ``N`` is uniform on ``lo … hi``.
    :param str objective: ``"reverse_kl"``, ``"forward_kl"`` or ``"mixed"``.
    :param bool greedy: stop gradients between refinement steps.
    :param int max_passes: each step refines over ``1 … max_passes`` passes of the data.
    :param checkpoint_dir: where ``last.safetensors``/``last.json`` (training state) and
        ``guide.safetensors``/``guide.json`` (the guide) are written every
        ``checkpoint_every`` steps and at the end.
    :param bool resume: continue from ``checkpoint_dir/last`` when it exists.
    :param float clip_norm: the gradient's global norm is clipped to this.
    :param int max_skipped: steps whose loss or gradient is not finite, or whose
        refinement left a non-positive-definite state, are skipped and counted in
        ``FitResult.skipped``; past this many, ``fit`` raises ``FloatingPointError``.
    :param parallel: a :class:`~iai_prob.inference.data_parallel.DataParallel` from
        :func:`~iai_prob.inference.data_parallel.init_from_environment` under ``torchrun``:
        each process trains on its slice of every step's ``tasks_per_step`` tasks.
    :returns: a :class:`FitResult`.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    low, high = num_points
    if not 1 <= low <= high:
        raise ValueError(f"num_points must be (lo, hi) with 1 <= lo <= hi, got {num_points!r}")
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
    generator = torch.Generator().manual_seed(seed)

    if getattr(guide, "refiner", False) is None:
        first = source.sample(1, max(low, 2), generator)
        guide._setup_prototype(*[a.to(device) if torch.is_tensor(a) else a for a in first.args])
    trainable = _trainable(guide).to(device)
    optimizer = optimizer or torch.optim.Adam(trainable.parameters(), lr=learning_rate)
    result = FitResult()
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    last = checkpoint_dir / "last" if checkpoint_dir is not None else None
    if resume and last is not None and last.with_suffix(".json").exists():
        _load_training(last, trainable, optimizer, result, device)
    budget = {
        "steps": steps,
        "tasks_per_step": tasks_per_step,
        "num_points": [low, high],
        "objective": objective,
        "greedy": greedy,
        "max_passes": max_passes,
        "seed": seed,
    }

    trainable.train()
    with flush_denormals():
        _train_loop(
            guide,
            trainable,
            source,
            optimizer,
            result,
            steps=steps,
            generator=generator,
            seed=seed,
            low=low,
            high=high,
            tasks_per_step=tasks_per_step,
            objective=objective,
            greedy=greedy,
            max_passes=max_passes,
            num_samples=num_samples,
            clip_norm=clip_norm,
            max_skipped=max_skipped,
            device=device,
            last=last,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            budget=budget,
            progress=progress and parallel.is_writer,
            parallel=parallel,
        )
    trainable.eval()
    return result


def _train_loop(
    guide,
    trainable,
    source,
    optimizer,
    result,
    *,
    steps,
    generator,
    seed,
    low,
    high,
    tasks_per_step,
    objective,
    greedy,
    max_passes,
    num_samples,
    clip_norm,
    max_skipped,
    device,
    last,
    checkpoint_dir,
    checkpoint_every,
    budget,
    progress,
    parallel,
):
    """The optimization loop of :func:`fit` (arguments as there)."""
    bar = tqdm(total=steps, initial=result.steps, disable=not progress, desc="fit")
    started = time.perf_counter() - result.seconds
    while result.steps < steps:
        generator.manual_seed(seed * 1_000_003 + result.steps)
        size = int(torch.randint(low, high + 1, (), generator=generator))
        batch = parallel.shard(source.sample(tasks_per_step, size, generator)).to(device)
        optimizer.zero_grad()
        try:
            loss, task, state = _step_loss(
                guide, batch, objective, greedy, max_passes, generator, num_samples
            )
            finite = bool(torch.isfinite(loss))
        except (RefinementError, torch.linalg.LinAlgError):  # a state left the PD cone
            loss, task, state, finite = torch.tensor(torch.nan), None, None, False
        if finite:
            loss.backward()
            grads = [p.grad for p in trainable.parameters() if p.grad is not None]
            finite = not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
        if parallel.all_finite(finite):
            parallel.average_gradients(trainable.parameters())
            torch.nn.utils.clip_grad_norm_(trainable.parameters(), clip_norm)
            optimizer.step()
        else:
            result.skipped += 1
            if result.skipped > max_skipped:
                raise FloatingPointError(
                    f"fit: {result.skipped} steps with a non-finite loss or gradient or a failed "
                    f"refinement (more than "
                    f"max_skipped={max_skipped}); lower the learning rate or check the model"
                )
        result.steps += 1
        loss_value = parallel.mean(float(loss.detach()))
        result.losses.append(loss_value)
        postfix = {"loss": f"{loss_value:.4g}"}
        if state is not None and (result.steps % 10 == 0 or result.steps == steps):
            kl = _exact_kl(guide, batch, task, state)
            if kl is not None:
                result.kls.append((result.steps, kl))
                postfix["kl"] = f"{kl:.3g}"
        bar.set_postfix(postfix)
        bar.update(1)
        result.seconds = time.perf_counter() - started
        at_checkpoint = result.steps % checkpoint_every == 0 or result.steps == steps
        if last is not None and parallel.is_writer and at_checkpoint:
            _save_training(last, trainable, optimizer, result, budget)
            guide.save(checkpoint_dir / "guide", budget=budget, seconds=result.seconds)
    bar.close()
