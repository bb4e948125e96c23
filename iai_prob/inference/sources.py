"""Where meta-training tasks come from: simulators, prior predictives, real datasets.

Every source answers ``sample(num_tasks, num_points, generator) -> TaskBatch``: the
model's arguments for a batch of ``T`` tasks of ``N`` points (shapes ``(T, N, …)``)
and, when simulated, the true latents ``θ`` (for the forward-KL objective and for
measuring calibration).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from iai_prob.checks import check_positive_int
from iai_prob.inference.validation import RefuseImproperPriors, explained_failures
from iai_prob.models.base import TaskFamily
from iai_prob.training_folder import callable_identity

__all__ = [
    "DatasetCollection",
    "FamilyTasks",
    "NormalCovariates",
    "PriorPredictiveTasks",
    "TaskBatch",
    "TaskSource",
    "as_task_source",
]


class TaskBatch(NamedTuple):
    """Model arguments for ``T`` tasks and, if simulated, their latents ``{name: (T, …)}``."""

    args: tuple
    theta: dict[str, torch.Tensor] | None

    def to(self, device) -> TaskBatch:
        args = tuple(a.to(device) if torch.is_tensor(a) else a for a in self.args)
        theta = None if self.theta is None else {k: v.to(device) for k, v in self.theta.items()}
        return TaskBatch(args, theta)

    def tasks(self, keep: torch.Tensor) -> TaskBatch:
        """The tasks where ``keep`` ``(T,)`` is true (arguments without a leading task
        dimension are shared, and kept whole)."""
        count = keep.shape[0]

        def select(value):
            per_task = torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == count
            return value[keep.to(value.device)] if per_task else value

        theta = None if self.theta is None else {k: select(v) for k, v in self.theta.items()}
        return TaskBatch(tuple(select(a) for a in self.args), theta)


class TaskSource:
    """A distribution over tasks for :func:`~iai_prob.inference.fit`."""

    has_latents: bool = True

    def sample(self, num_tasks: int, num_points: int, generator: torch.Generator) -> TaskBatch:
        raise NotImplementedError

    def identity(self) -> dict:
        """What the tasks are, as JSON: a training folder resumes only the same tasks."""
        return {"source": type(self).__qualname__}


class FamilyTasks(TaskSource):
    """Tasks from a :class:`~iai_prob.models.TaskFamily`'s vectorized simulator."""

    def __init__(self, family: TaskFamily):
        self.family = family
        # explicit-regime families simulate data but no latents of their own model
        self.has_latents = getattr(family, "simulates_latents", True)

    def sample(self, num_tasks, num_points, generator):
        theta, x, y = self.family.sample(num_tasks, num_points, generator=generator)
        return TaskBatch((x, y), theta)

    def identity(self) -> dict:
        return {"family": self.family.name, "config": self.family.config()}

    def __repr__(self) -> str:
        return f"FamilyTasks({self.family!r})"


class NormalCovariates:
    """Covariates ``x ~ N(0, I_d)`` for :class:`PriorPredictiveTasks`: the tuple ``(x,)``
    with ``x`` of shape ``(T, N, d)`` (what ``iai train --x-dim d`` draws).

    :param int dim: the feature dimension ``d``.
    """

    def __init__(self, dim: int):
        self.dim = check_positive_int("dim", dim)

    def __call__(self, num_tasks: int, num_points: int, generator: torch.Generator) -> tuple:
        return (torch.randn(num_tasks, num_points, self.dim, generator=generator),)

    def identity(self) -> dict:
        return {"x_dim": self.dim}

    def __repr__(self) -> str:
        return f"NormalCovariates({self.dim})"


class PriorPredictiveTasks(TaskSource):
    """Tasks from any Pyro model's prior predictive.

    :param model: ``model(*covariates, y=None)``, vectorized over an outer ``"tasks"``
        plate when its covariates have a leading ``T`` dimension.
    :param covariates: ``covariates(num_tasks, num_points, generator) -> tuple`` of the
        model's arguments before the observations (e.g. ``(x,)``).
    :param str observed: the name of the observed site inside the data plate.
    :param str data_plate: the name of the data plate.
    """

    def __init__(
        self, model, covariates: Callable, *, observed: str = "y", data_plate: str = "data"
    ):
        self.model = model
        self.covariates = covariates
        self.observed = observed
        self.data_plate = data_plate

    def sample(self, num_tasks, num_points, generator):
        args = tuple(self.covariates(num_tasks, num_points, generator))
        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
        with torch.random.fork_rng(), torch.no_grad(), explained_failures(self.model, args, {}):
            torch.manual_seed(seed)
            # an improper prior is refused by site name, as the guide refuses it
            trace = poutine.trace(RefuseImproperPriors()(self.model)).get_trace(*args)
        if self.observed not in trace.nodes:
            raise ValueError(f"the model has no site named {self.observed!r} to observe")
        theta = {}
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or name == self.observed or site_is_subsample(site):
                continue
            if all(f.name != self.data_plate for f in site["cond_indep_stack"]):
                theta[name] = self._per_task(name, site, num_tasks)
        y = trace.nodes[self.observed]["value"]
        return TaskBatch((*args, y), theta)

    @staticmethod
    def _per_task(name: str, site: dict, num_tasks: int) -> torch.Tensor:
        """The value of a global site as ``(T, *event_shape)``: one draw per task."""
        value, event_shape = site["value"], site["fn"].event_shape
        if value.numel() != num_tasks * event_shape.numel():
            raise ValueError(
                f"global site {name!r} has shape {tuple(value.shape)} for a batch of "
                f"{num_tasks} tasks, not one value of shape {tuple(event_shape)} per task: "
                f"wrap the global latents in pyro.plate('tasks', T, dim=-2) when x is "
                "(T, N, d) (README, 'Use it from Pyro')"
            )
        return value.reshape(num_tasks, *event_shape)

    def identity(self) -> dict:
        """The model and covariates as ``FILE:QUALNAME``
        (:func:`~iai_prob.training_folder.callable_identity`, the same however the file was
        imported), :class:`NormalCovariates` as ``{"x_dim": d}``."""
        covariates = self.covariates
        return {
            "prior_predictive": callable_identity(self.model),
            "covariates": (
                covariates.identity()
                if isinstance(covariates, NormalCovariates)
                else callable_identity(covariates)
            ),
            "observed": self.observed,
            "data_plate": self.data_plate,
        }

    def __repr__(self) -> str:
        return f"PriorPredictiveTasks({getattr(self.model, '__qualname__', self.model)!r})"


class DatasetCollection(TaskSource):
    """Tasks drawn from a user's datasets ``[(x, y), …]``: a random dataset, ``N`` random points.

    Real data carry no latents, so only ``objective="reverse_kl"`` applies. A step's ``N``
    is capped by the smallest dataset drawn in that step.
    """

    has_latents = False

    def __init__(self, datasets: Sequence[tuple[torch.Tensor, torch.Tensor]]):
        if len(datasets) == 0:
            raise ValueError("DatasetCollection needs at least one dataset")
        for index, (x, y) in enumerate(datasets):
            if len(x) != len(y) or len(x) < 1:
                raise ValueError(
                    f"dataset {index}: x and y must have the same positive length, "
                    f"got {len(x)} and {len(y)}"
                )
        self.datasets = list(datasets)

    def sample(self, num_tasks, num_points, generator):
        picks = torch.randint(0, len(self.datasets), (num_tasks,), generator=generator).tolist()
        size = min([num_points] + [len(self.datasets[i][0]) for i in picks])
        xs, ys = [], []
        for i in picks:
            x, y = self.datasets[i]
            index = torch.randperm(len(x), generator=generator)[:size]
            xs.append(x[index])
            ys.append(y[index])
        return TaskBatch((torch.stack(xs), torch.stack(ys)), None)

    def identity(self) -> dict:
        """The number of datasets and a SHA-256 of their shapes and values."""
        digest = hashlib.sha256()
        for pair in self.datasets:
            for tensor in pair:
                tensor = torch.as_tensor(tensor).detach().cpu().contiguous()
                digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
                digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
        return {"datasets": len(self.datasets), "sha256": digest.hexdigest()}

    def __repr__(self) -> str:
        return f"DatasetCollection({len(self.datasets)} datasets)"


def as_task_source(tasks) -> TaskSource:
    """Wrap ``tasks`` (family, source or datasets) as a :class:`TaskSource`."""
    if isinstance(tasks, TaskSource):
        return tasks
    if isinstance(tasks, TaskFamily):
        return FamilyTasks(tasks)
    if isinstance(tasks, Sequence) and not isinstance(tasks, str | bytes):
        return DatasetCollection(tasks)
    if callable(tasks):
        raise ValueError(
            "a bare Pyro model gives no covariates to simulate from: wrap it as "
            "PriorPredictiveTasks(model, covariates=lambda T, N, generator: (x,))"
        )
    raise ValueError(f"cannot draw tasks from {tasks!r}")
