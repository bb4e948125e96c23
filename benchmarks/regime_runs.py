"""Train and score one amortization regime on one task family (for ``regimes.py``).

Learners (all trained by :func:`iai_prob.inference.fit`, greedy, reverse KL or, for the
implicit predictor, its query NLL):

* ``parametric``: :class:`IterativeAmortizedGuide` over the family's own latents (the
  likelihood is known);
* ``explicit``: the same guide over a task latent ``z`` of a learned decoder
  (:class:`LatentNeuralProcess` for predictive families, :class:`NeuralStatistician`
  for generative ones), decoder and guide trained jointly;
* ``implicit``: :class:`ImplicitPredictor` (predictive families only);
* ``maml`` / ``meta_sgd``: the parametric guide with ``update="maml"`` / ``"meta_sgd"``.

Scores on held-out tasks split into a context of ``N`` points and 64 query points:
regression MSE of the predictive mean and NLL; classification error rate and NLL;
generation NLL of held-out points (``−log (1/S) Σ_s p(y* | z_s)``, nats per point) and
the unbiased RBF-kernel MMD² (median-heuristic bandwidth; :func:`iai_prob.diagnostics.mmd`)
between 64 posterior-predictive points per task (point ``q`` generated from draw
``z_{q mod S}``) and the task's 64 held-out points, averaged over tasks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from pyro import poutine

from iai_prob.diagnostics import mmd
from iai_prob.inference import ImplicitPredictor, IterativeAmortizedGuide, fit
from iai_prob.models import GaussianMixture
from iai_prob.models.neural_process import LatentNeuralProcess
from iai_prob.models.neural_statistician import NeuralStatistician

__all__ = ["REGIMES", "Budget", "Condition", "FamilySpec", "Learner", "evaluate", "train"]

REGIMES = ("parametric", "explicit", "implicit", "maml", "meta_sgd")
NUM_QUERIES = 64
NUM_DRAWS = 32
HELD_OUT_SEED = 2_000_000_000


@dataclass
class Budget:
    """Training and evaluation sizes (``--quick`` shrinks them)."""

    steps: dict[str, int]
    tasks_per_step: int = 16
    num_points: tuple[int, int] = (16, 64)
    batch_size: int = 16
    passes: int = 2
    eval_tasks: int = 32


@dataclass
class Condition:
    """A test condition: tasks from ``family`` with ``num_points`` context points,
    inputs scaled by ``input_scale`` (labels re-simulated from the same latents)."""

    label: str
    family: object
    num_points: int
    input_scale: float = 1.0


@dataclass
class FamilySpec:
    """A row group of the table: the training family and its test conditions."""

    name: str
    kind: str  # "regression", "classification" or "generation"
    train: object
    conditions: list[Condition]
    likelihood: str = "gaussian"  # of the explicit decoder and the implicit predictor
    num_classes: int = 2
    posterior: str = "full_rank"
    inner_lr: float = 0.1  # MAML's step size (Meta-SGD's initial one): ~1 / per-point curvature
    explicit_options: dict = field(default_factory=dict)


@dataclass
class Learner:
    regime: str
    model: object  # a guide or an ImplicitPredictor
    family: object  # the family whose model the guide runs (None for implicit)
    seconds: float
    final_loss: float  # mean of the finite losses among the last 10 steps
    skipped: int  # steps fit skipped (non-finite loss or gradient, failed refinement)


def _guide(model, spec: FamilySpec, budget: Budget, **options) -> IterativeAmortizedGuide:
    return IterativeAmortizedGuide(
        model,
        family=spec.posterior,
        encoder="deep_sets",
        encoder_options={"embed_dim": 32, "hidden_dim": 64},
        batch_size=budget.batch_size,
        **options,
    )


def train(regime: str, spec: FamilySpec, budget: Budget, seed: int = 0) -> Learner:
    """Build and meta-train the learner of ``regime`` on ``spec.train``."""
    torch.manual_seed(seed)
    family = spec.train
    if regime == "parametric":
        model = _guide(family, spec, budget)
    elif regime in ("maml", "meta_sgd"):
        model = _guide(family, spec, budget, update=regime, inner_lr=spec.inner_lr)
    elif regime == "explicit":
        if spec.kind == "generation":
            family = NeuralStatistician(spec.train, **spec.explicit_options)
        else:
            family = LatentNeuralProcess(
                spec.train,
                likelihood=spec.likelihood,
                num_classes=spec.num_classes,
                **spec.explicit_options,
            )
        model = _guide(family, FamilySpec(spec.name, spec.kind, family, []), budget)
    elif regime == "implicit":
        if spec.kind == "generation":
            raise ValueError("the implicit predictor needs queries x*; generative tasks have none")
        input_dim = family.sample(1, 1, generator=torch.Generator().manual_seed(0))[1].shape[-1]
        model = ImplicitPredictor(
            input_dim,
            likelihood=spec.likelihood,
            num_classes=spec.num_classes,
            batch_size=budget.batch_size,
        )
        family = None
    else:
        raise ValueError(f"unknown regime {regime!r}; choose from {REGIMES}")
    started = time.perf_counter()
    result = fit(
        model,
        spec.train if family is None else family,
        steps=budget.steps[regime],
        tasks_per_step=budget.tasks_per_step,
        num_points=budget.num_points,
        # the parametric guides' update is near-exact at initialization (CVI); a large
        # learning rate on a short budget pulls its learned step sizes away from it
        learning_rate=1e-3 if regime == "parametric" else 3e-3,
        seed=seed,
        progress=False,
    )
    seconds = time.perf_counter() - started
    finite = [value for value in result.losses[-10:] if math.isfinite(value)]
    final = sum(finite) / len(finite) if finite else math.nan
    return Learner(regime, model, family, seconds, final, result.skipped)


# ------------------------------------------------------------------------- held-out data
def held_out(condition: Condition, num_tasks: int, seed: int = 0):
    """``(x, y, x_query, y_query)`` for ``num_tasks`` seeded held-out tasks."""
    generator = torch.Generator().manual_seed(HELD_OUT_SEED + seed + condition.num_points)
    family = condition.family
    theta, x, y = family.sample(num_tasks, condition.num_points + NUM_QUERIES, generator=generator)
    if condition.input_scale != 1.0:
        x = condition.input_scale * x
        values = {name: value.unsqueeze(1) for name, value in theta.items()}
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            y = poutine.condition(family.model, data=values)(x)
    n = condition.num_points
    return x[:, :n], y[:, :n], x[:, n:], y[:, n:]


# ------------------------------------------------------------------------------- scoring
def _scores(kind: str, y_query, log_prob, mean=None, probs=None) -> dict[str, float]:
    """Metrics from per-draw log densities ``(S, T, Q)`` and the predictive mean / probs."""
    nll = -(torch.logsumexp(log_prob, 0) - math.log(log_prob.shape[0])).mean()
    scores = {"nll": float(nll)}
    if kind == "regression":
        scores["mse"] = float(((mean - y_query) ** 2).mean())
    elif kind == "classification":
        predicted = probs.argmax(-1) if probs.dim() == y_query.dim() + 1 else probs > 0.5
        scores["error"] = float((predicted.to(y_query.dtype) != y_query).float().mean())
    return scores


def _mixture_log_prob(family: GaussianMixture, values: dict, y_query) -> torch.Tensor:
    """``log Σ_k π_k N(y | μ_k, σ² I)`` per draw and query point, ``(S, T, Q)``."""
    weights, locs = values["weights"], values["locs"]  # (S, T, K), (S, T, K, d)
    components = torch.distributions.Normal(locs.unsqueeze(-3), family.noise_scale)
    log_prob = components.log_prob(y_query.unsqueeze(-2)).sum(-1)  # (S, T, Q, K)
    return torch.logsumexp(log_prob + weights.log().unsqueeze(-2), -1)


def _predictive_mmd(fn, y_query) -> float:
    """MMD² between posterior-predictive points and the held-out ``y_query`` ``(T, Q, ...)``.

    ``fn`` is the model's ``y`` site at the posterior draws, batch ``(S, T, Q)``; query slot
    ``q`` takes its point from draw ``q mod S``, so the ``Q`` generated points of a task mix
    over the posterior like the posterior predictive.
    """
    draws = fn.sample()  # (S, T, Q, *event)
    num_queries = y_query.shape[1]
    slots = torch.arange(num_queries)
    generated = draws[slots % draws.shape[0], :, slots].movedim(0, 1)  # (T, Q, *event)
    flat = generated.reshape(*generated.shape[:2], -1).to(torch.float64)
    held_out = y_query.reshape(*y_query.shape[:2], -1).to(torch.float64)
    return float(mmd(flat, held_out).mean())


def _guide_scores(learner: Learner, kind: str, state, x_query, y_query, generator):
    guide = learner.model
    q = guide.refiner.family.distribution(state.loc, state.precision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=generator)))
        z = q.sample((NUM_DRAWS,))
        task = guide.prepare(x_query, y_query)
        site = task.log_joint.site(z, task.data, "y")  # discrete locals sampled, not summed
        fn, value = site["fn"], site["value"]
        extra = {"mmd": _predictive_mmd(fn, y_query)} if kind == "generation" else {}
    if isinstance(learner.family, GaussianMixture):
        values = {site.name: value for site, value, _ in task.layout.unpack(z)}
        log_prob = _mixture_log_prob(learner.family, values, y_query)
        return _scores(kind, y_query, log_prob) | extra
    log_prob = fn.log_prob(value)
    if kind == "regression":
        return _scores(kind, y_query, log_prob, mean=fn.mean.mean(0))
    if kind == "classification":
        return _scores(kind, y_query, log_prob, probs=fn.probs.mean(0))
    return _scores(kind, y_query, log_prob) | extra


def _implicit_scores(predictor: ImplicitPredictor, kind: str, state, y_query):
    predictive = predictor.predictive(state)
    log_prob = predictive.log_prob(y_query.to(state.dtype) if kind == "regression" else y_query)
    if kind == "regression":
        return _scores(kind, y_query, log_prob.unsqueeze(0), mean=predictive.mean)
    return _scores(kind, y_query, log_prob.unsqueeze(0), probs=predictive.probs)


def _first_and_last(states, every_step: bool):
    """All states, or only ``λ_0`` and ``λ_K`` (scoring every step costs time)."""
    states = list(states)
    return states if every_step else [states[0], states[-1]]


@torch.no_grad()
def evaluate(
    learner: Learner, spec: FamilySpec, condition: Condition, budget: Budget, *, every_step=True
):
    """Scores after the refinement steps ``k = 0 … K`` (``K`` = ``passes`` passes of
    mini-batches; only ``k = 0`` and ``K`` unless ``every_step``) and of the one-shot
    learner: ``(trace, one_shot)``."""
    x, y, x_query, y_query = held_out(condition, budget.eval_tasks)
    num_steps = budget.passes * math.ceil(condition.num_points / budget.batch_size)
    generator = torch.Generator().manual_seed(7)
    if learner.regime == "implicit":
        predictor = learner.model
        states = predictor.trajectory(x, y, x_query, num_steps=num_steps)
        trace = [
            _implicit_scores(predictor, spec.kind, s, y_query)
            for s in _first_and_last(states, every_step)
        ]
        single = predictor.predict(x, y, x_query, num_steps=1, batch_size=condition.num_points)
        return trace, _implicit_scores(predictor, spec.kind, single, y_query)
    guide = learner.model
    task = guide.prepare(x, y)
    states = (state for state, _ in guide.trajectory(task, num_steps=num_steps))
    trace = [
        _guide_scores(learner, spec.kind, state, x_query, y_query, generator)
        for state in _first_and_last(states, every_step)
    ]
    return trace, trace[0]
