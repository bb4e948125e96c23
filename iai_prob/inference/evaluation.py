"""Held-out evaluation of a guide: KL to exact posteriors, PSIS k̂, and the fixed
validation tasks that :func:`~iai_prob.inference.fit` scores the guide on as it trains
(:class:`ValidationTasks`)."""

from __future__ import annotations

import math

import torch

from iai_prob.inference.objectives import elbo, kl_to_exact, task_losses
from iai_prob.models.base import TaskFamily
from iai_prob.refinement_state import RefinementError
from iai_prob.validation_history import validation_score

__all__ = [
    "ValidationTasks",
    "evaluate_exact_kl",
    "evaluate_khat",
    "held_out_elbo_per_point",
    "held_out_khat",
    "held_out_kl",
    "importance_log_weights",
    "refinement_steps",
]


def refinement_steps(guide, task, passes: int) -> int | None:
    """The refinement steps of ``passes`` passes over ``task``'s data in mini-batches of
    the guide's ``batch_size`` (``None``: the guide's own fixed ``num_steps``)."""
    if guide.config["num_steps"] is not None:
        return None
    return passes * math.ceil(task.data.num_points / guide.config["batch_size"])


class ValidationTasks:
    """A fixed set of held-out tasks, drawn once, and a guide's score on them.

    :param source: the training tasks' :class:`~iai_prob.inference.sources.TaskSource`.
    :param sizes: ``[(tasks, N), …]``
        (:func:`~iai_prob.validation_history.validation_sizes`).
    :param generator: the validation tasks' own generator (never the training one).
    :param device: where the tasks go.
    """

    def __init__(self, source, sizes: list[tuple[int, int]], generator, device):
        self.batches = [(t, source.sample(t, n, generator).to(device)) for t, n in sizes]
        self.num_tasks = sum(t for t, _ in sizes)

    @torch.no_grad()
    def score(self, guide, objective: str, *, max_passes: int, num_samples: int, seed: int):
        """The training objective averaged over the refinement steps ``λ_0 … λ_K`` of
        ``max_passes`` passes (what training minimizes), per task, and its median over the
        tasks (:func:`~iai_prob.validation_history.validation_score`; the same noise at
        every call: ``seed``); ``inf`` when a refinement fails. Lower is better.

        An :class:`~iai_prob.inference.implicit.ImplicitPredictor` is scored by its own
        ``training_loss`` (its predictive negative log-likelihood on held-out points).
        """
        generator = torch.Generator().manual_seed(seed)
        self._drop_refused(guide)
        if not self.batches:
            return math.inf
        losses = []
        for count, batch in self.batches:
            try:
                loss = self._batch_score(
                    guide, batch, objective, max_passes, num_samples, generator
                )
            except (RefinementError, torch.linalg.LinAlgError):
                return math.inf
            losses.extend(loss.double().cpu().expand(count).tolist())
        return validation_score(losses)

    def _drop_refused(self, guide) -> None:
        """Drop, once, the batches whose data the model's likelihood refuses (a simulator
        that overflowed: outside the likelihood's support), so every score reads the same
        tasks."""
        if getattr(self, "_checked", False) or hasattr(guide, "training_loss"):
            return
        kept = []
        for count, batch in self.batches:
            try:
                guide.prepare(*batch.args)
            except ValueError as error:
                if "support" not in str(error):
                    raise
                continue
            kept.append((count, batch))
        self.batches, self._checked = kept, True
        self.num_tasks = sum(count for count, _ in kept)

    @staticmethod
    def _batch_score(guide, batch, objective, max_passes, num_samples, generator):
        """The batch's loss per task, ``(T,)`` (a scalar for an implicit predictor, which
        scores the batch as a whole)."""
        if hasattr(guide, "training_loss"):
            args = batch.args
            return guide.training_loss(
                args, greedy=True, max_passes=max_passes, generator=generator
            ).detach()
        task = guide.prepare(*batch.args)
        num_steps = refinement_steps(guide, task, max_passes)
        true_z = None
        if objective != "reverse_kl":
            true_z = task.layout.pack(batch.theta, batch_ndim=1).to(task.data.features.device)
        losses = [
            task_losses(
                objective,
                state,
                guide.refiner.family,
                task,
                true_z,
                num_samples=num_samples,
                generator=generator,
            )
            for state, _ in guide.trajectory(task, num_steps=num_steps)
        ]
        # the mean over the steps λ_0 … λ_K, as training minimizes: the final state alone
        # ties a trained and an untrained guide whenever both refine to the answer
        return sum(losses) / len(losses)


@torch.no_grad()
def held_out_kl(
    guide,
    family: TaskFamily,
    num_points: int,
    *,
    num_tasks: int = 256,
    num_steps: int | None = None,
    seed: int = 12345,
) -> torch.Tensor:
    """``KL(q ‖ p(θ | D))`` for ``num_tasks`` fresh tasks of ``num_points`` points, ``(T,)``."""
    generator = torch.Generator().manual_seed(seed + num_points)
    _, x, y = family.sample(num_tasks, num_points, generator=generator)
    task = guide.prepare(x, y)
    state = guide.final_state(task, num_steps=num_steps)
    order = tuple(site.name for site in family.latent_sites)
    return kl_to_exact(
        state, guide.refiner.family, task.layout, family.exact_posterior(x, y), site_order=order
    )


def evaluate_exact_kl(guide, family: TaskFamily, sizes, *, num_tasks: int = 256) -> dict:
    """Median held-out KL per dataset size (fewer tasks above 4,096 points)."""
    return {
        str(n): float(
            held_out_kl(guide, family, n, num_tasks=num_tasks if n <= 4096 else 32).median()
        )
        for n in sizes
    }


def importance_log_weights(guide, task, state, num_draws: int = 1000, seed: int = 0):
    """``log p(z, D) − log q(z)`` for ``num_draws`` draws per task, ``(num_draws, T)``.

    Draws and tasks are evaluated together, in chunks of bounded memory, with enumerated
    discrete sites summed out (:func:`iai_prob.diagnostics.log_joint_per_draw`).
    """
    from iai_prob.diagnostics.adapter import log_joint_per_draw

    family = guide.refiner.family
    q = family.distribution(state.loc, state.precision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = q.sample((num_draws,))
    return log_joint_per_draw(task, z) - q.log_prob(z)


@torch.no_grad()
def held_out_khat(
    guide,
    family: TaskFamily,
    num_points: int,
    *,
    num_tasks: int = 64,
    num_draws: int = 1000,
    seed: int = 23456,
) -> torch.Tensor:
    """Pareto k̂ (Yao et al. 2018) of the importance weights per held-out task, ``(T,)``.

    ``k̂ < 0.5`` good, ``< 0.7`` usable, ``≥ 0.7`` the posterior should not be trusted.
    """
    from iai_prob.diagnostics.psis import psis_khat

    generator = torch.Generator().manual_seed(seed + num_points)
    _, x, y = family.sample(num_tasks, num_points, generator=generator)
    task = guide.prepare(x, y)
    state = guide.final_state(task)
    log_weights = importance_log_weights(guide, task, state, num_draws=num_draws)
    return torch.tensor(psis_khat(log_weights), dtype=torch.get_default_dtype())


@torch.no_grad()
def held_out_elbo_per_point(
    guide, family: TaskFamily, num_points: int, *, num_tasks: int = 64, seed: int = 34567
) -> float:
    """Monte Carlo ELBO per data point, averaged over ``num_tasks`` held-out tasks."""
    generator = torch.Generator().manual_seed(seed + num_points)
    _, x, y = family.sample(num_tasks, num_points, generator=generator)
    task = guide.prepare(x, y)
    state = guide.final_state(task)
    value = elbo(
        state, guide.refiner.family, task.log_joint, task.data, num_samples=64, generator=generator
    )
    return float(value) / (num_tasks * num_points)


def evaluate_khat(guide, family: TaskFamily, sizes, *, num_tasks: int = 64) -> dict:
    """Median k̂ and the share of tasks with ``k̂ < 0.7`` per dataset size."""
    quality = {}
    for n in sizes:
        khat = held_out_khat(guide, family, n, num_tasks=num_tasks)
        quality[str(n)] = {
            "median_khat": float(khat.median()),
            "share_khat_below_0.7": float((khat < 0.7).float().mean()),
        }
    return quality
