"""Held-out validation during meta-training: the scores, the best step, early stopping.

Both backends' ``fit`` hold out a fixed set of validation tasks, drawn once from the
training tasks' own source with a seed of their own, and score the guide on them (the
training objective on the refined state: ``−ELBO`` per task for ``"reverse_kl"``,
``−log q(z_true)`` for ``"forward_kl"``, their sum for ``"mixed"``; lower is better)
before the first step (the untrained score) and every ``validate_every`` steps. This
module is what the two share, in plain Python (neither torch nor JAX):

* :func:`validation_sizes`: how the tasks spread over ``num_points``;
* :func:`validation_score`: the score, the median of the tasks' losses;
* :class:`ValidationHistory`: the scheduled scores, the best step, the early-stopping
  rule and the warning when training made the guide worse than it started;
* :class:`ValidationSchedule`: when a training loop scores its guide, and what it keeps.

Only the scheduled validations (step 0 and the multiples of ``validate_every``) choose
the best guide and count towards early stopping; the score at the end of a call
(:attr:`ValidationHistory.final`) decides only whether that call returns its last
weights or the best ones. A run stopped and resumed with more steps therefore keeps
the same best-so-far state as one run straight through, bit for bit: the schedule does
not depend on where a call ended. (Early stopping on held-out loss: Prechelt 1998,
"Early stopping — but when?")
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "StepValidation",
    "ValidationHistory",
    "ValidationSchedule",
    "validation_score",
    "validation_sizes",
]


def validation_score(task_losses) -> float:
    """The median of the validation tasks' losses (the lower middle one of an even count),
    a loss that is not finite counting as ``inf``.

    The median, not the mean: on raw counts a few tasks whose data pass float range at
    the ELBO's draws (a loss that is not finite) cannot void every score, and the few
    tasks of largest scale (losses of 1e11 nats beside 1e3) cannot stand for all. More
    than half the tasks not finite gives ``inf``.
    """
    losses = sorted(float(loss) if math.isfinite(float(loss)) else math.inf for loss in task_losses)
    return losses[(len(losses) - 1) // 2] if losses else math.inf


def validation_sizes(num_tasks: int, low: int, high: int, groups: int = 4) -> list[tuple[int, int]]:
    """``[(tasks, N), …]``: ``num_tasks`` tasks in up to ``groups`` batches whose ``N`` spread
    evenly over ``low … high`` (each batch shares one ``N``, as a training step does)."""
    groups = max(1, min(groups, num_tasks, high - low + 1))
    sizes = []
    for index in range(groups):
        share = num_tasks // groups + (index < num_tasks % groups)
        points = low if groups == 1 else round(low + (high - low) * index / (groups - 1))
        sizes.append((share, points))
    return sizes


@dataclass
class ValidationHistory:
    """The validation scores of a run (lower is better; a non-finite score is ``inf``).

    :ivar scores: ``[(step, score), …]`` of the scheduled validations; step 0 is the
        untrained guide's (absent when the run was resumed from a card of an earlier
        version, which kept no history).
    :ivar best_step: the step of the best scheduled score, ``None`` before any finite one.
    :ivar final: ``(step, score)`` of the weights at the end of the last call.
    :ivar num_tasks: the number of validation tasks.
    """

    scores: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    final: tuple[int, float] | None = None
    num_tasks: int = 0

    @property
    def untrained(self) -> float | None:
        """The score before the first step, if this run recorded it."""
        return self.scores[0][1] if self.scores and self.scores[0][0] == 0 else None

    @property
    def best(self) -> float | None:
        """The best scheduled score."""
        return dict(self.scores)[self.best_step] if self.best_step is not None else None

    @property
    def latest(self) -> float | None:
        """The most recent score (the final one if the call ended after the schedule)."""
        if self.final is not None and (not self.scores or self.final[0] >= self.scores[-1][0]):
            return self.final[1]
        return self.scores[-1][1] if self.scores else None

    def record(self, step: int, score: float) -> bool:
        """Add a scheduled score; ``True`` when it is the best so far (strictly lower and
        finite: ties keep the earlier step)."""
        score = float(score) if math.isfinite(score) else math.inf
        self.scores.append((step, score))
        if math.isfinite(score) and (self.best is None or score < self.best):
            self.best_step = step
            return True
        return False

    def stale(self) -> int:
        """Scheduled validations since the best one (all of them when none was finite)."""
        return sum(1 for step, _ in self.scores if self.best_step is None or step > self.best_step)

    def should_stop(self, patience: int | None) -> bool:
        """``True`` after ``patience`` validations without a new best."""
        return patience is not None and bool(self.scores) and self.stale() >= patience

    def final_is_best(self) -> bool:
        """Whether the end-of-call weights score at least as well as the best scheduled
        ones (so the call returns them rather than restoring the best)."""
        if self.final is None or self.best is None:
            return True
        return self.final[0] == self.best_step or self.final[1] <= self.best

    def weights_to_save(self, at_end: bool, has_best: bool) -> tuple[bool, tuple | None]:
        """Which weights a checkpoint's guide holds: ``(keep_last, scored)``, ``keep_last``
        ``False`` for the best scheduled ones, ``scored`` their ``(step, score)``
        (``None``: not scored). Before the end of a call the last weights are saved only
        when no best is held; at the end, when they score at least as well."""
        keep_last = not has_best or (at_end and self.final_is_best())
        if not keep_last:
            return False, (self.best_step, self.best)
        return True, self.final if at_end else None

    def worse_than_untrained(self, backend: str = "fit") -> str | None:
        """One line when the trained weights end worse than the untrained ones, else ``None``."""
        untrained = self.untrained
        if self.final is None or untrained is None or not self.final[1] > untrained:
            return None
        kept = (
            "kept the untrained weights"
            if self.best_step == 0
            else f"kept the best guide, from step {self.best_step} (score {self.best:.4g})"
        )
        return (
            f"{backend}: after {self.final[0]} steps the guide scores {self.final[1]:.4g} on "
            f"{self.num_tasks} held-out validation tasks, worse than the untrained guide's "
            f"{untrained:.4g} (lower is better); {kept}; lower the learning rate, train "
            "longer or check the model's priors and scale"
        )

    def guide_card_field(self, saved: tuple | None) -> dict:
        """The guide card's ``validation`` field (both backends write it): the saved
        weights' ``(step, score)`` (``None``: not scored), the untrained score and the
        number of tasks; ``{}`` without validation."""
        if not self.num_tasks:
            return {}
        step, score = saved if saved is not None else (None, None)
        return {
            "validation": {
                "step": step,
                "score": score,
                "untrained": self.untrained,
                "tasks": self.num_tasks,
            }
        }

    def to_card(self) -> dict:
        """As JSON for a training card."""
        return {
            "scores": [list(pair) for pair in self.scores],
            "best_step": self.best_step,
            "final": list(self.final) if self.final is not None else None,
            "num_tasks": self.num_tasks,
        }

    @classmethod
    def from_card(cls, card: dict | None) -> ValidationHistory:
        """From :meth:`to_card`'s JSON; a card without history gives an empty one."""
        if not card:
            return cls()
        final = card.get("final")
        return cls(
            scores=[(int(step), float(score)) for step, score in card["scores"]],
            best_step=card["best_step"],
            final=(int(final[0]), float(final[1])) if final else None,
            num_tasks=int(card.get("num_tasks", 0)),
        )


class StepValidation(NamedTuple):
    """What :meth:`ValidationSchedule.after_step` found: whether the weights are the best so
    far (keep them), whether the call ends here (its last step, or early stopping), and
    whether a new score is there to show."""

    new_best: bool
    at_end: bool
    scored: bool


class ValidationSchedule:
    """When a training loop scores its guide, and what it keeps (both backends' ``fit``).

    The guide is scored on the validation tasks before the first step of a fresh run,
    after every ``every`` steps (the scheduled scores, which choose the best weights and
    count towards early stopping after ``patience`` of them without a new best), and at
    the end of each call (:attr:`ValidationHistory.final`). Without validation tasks
    (``score=None``) nothing is scored and a call ends after its last step.

    :param history: the run's :class:`ValidationHistory` (resumed runs bring theirs).
    :param score: scores the current weights on the validation tasks, or ``None``.
    :param every: steps between scheduled scores (``validate_every``).
    :param patience: scheduled scores without a new best before stopping, or ``None``.
    """

    def __init__(
        self,
        history: ValidationHistory,
        score: Callable[[], float] | None,
        *,
        every: int,
        patience: int | None,
    ):
        self.history = history
        self.score = score
        self.every = every
        self.patience = patience
        self.stop = history.should_stop(patience)

    def begin(self, step: int) -> bool:
        """Score the untrained guide at the start of a fresh run (``step == 0`` and nothing
        recorded yet); ``True`` when that made it the best (keep its weights)."""
        if self.score is None or step != 0 or self.history.scores:
            return False
        new_best = self.history.record(0, self.score())
        self.stop = self.history.should_stop(self.patience)
        return new_best

    def after_step(self, step: int, steps: int) -> StepValidation:
        """Score the weights after training step ``step`` of ``steps`` if it is scheduled
        or ends the call (then also :attr:`ValidationHistory.final`), and update
        :attr:`stop`."""
        history = self.history
        scheduled = self.score is not None and step % self.every == 0
        new_best = False
        if scheduled:
            new_best = history.record(step, self.score())
            self.stop = history.should_stop(self.patience)
        at_end = step == steps or self.stop
        if self.score is not None and at_end:
            history.final = (step, history.scores[-1][1] if scheduled else self.score())
        return StepValidation(new_best, at_end, self.score is not None and (scheduled or at_end))

    def end(self, step: int, has_best: bool) -> bool:
        """Close a call that ended at ``step``: score the weights if no step of it did (a
        resumed run with nothing left to train); ``True`` when the best weights, held
        (``has_best``), must replace the last ones."""
        history = self.history
        if self.score is not None and (history.final is None or history.final[0] != step):
            history.final = (step, self.score())
        return has_best and not history.final_is_best()
