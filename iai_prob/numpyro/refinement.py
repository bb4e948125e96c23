"""The refinement core in JAX: a pure ``init`` / ``step`` pair and a ``lax.scan`` over steps.

    λ_0     = init_φ(D_context)                    (one-shot set encoder)
    λ_{k+1} = step_φ(λ_k, B_k)                     (k = 0 … K−1, B_k mini-batches of D)

with ``λ = (μ, Λ)`` a Gaussian over the joint unconstrained latent per task (Mittal,
Mahajan, Lajoie, Pezeshki 2025, §3; Marino et al. 2018): the twin of
:mod:`iai_prob.inference.refinement`, step for step. :class:`Refiner` is an equinox
module holding the learned pieces (its parameter names are those of the PyTorch
``Refiner``); :func:`init`, :func:`step` and :func:`refine` are pure functions of it.
The data-dependent branches of the PyTorch step (backtracking, the Newton fallback,
up to ``max_relinearizations`` proximal re-linearizations that stop once the proposal
moved less than 0.5 nats) are ``lax.cond`` / ``lax.while_loop`` with the same decisions.
:func:`refine` is one ``lax.scan`` over a padded mini-batch schedule, compiled once per
data shape. JAX cannot raise inside compiled code, so :func:`check_state` is called on
the result by the eager entry points and raises :class:`RefinementError` there.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from iai_prob.numpyro.damping import damped_combine, unscented_batch_elbo
from iai_prob.numpyro.encoders import Linear, get_encoder
from iai_prob.numpyro.posteriors import GaussianFamily, gaussian_entropy, gaussian_kl
from iai_prob.numpyro.signals import curvature_signal, natural_gradient_target
from iai_prob.numpyro.task_data import TaskData
from iai_prob.numpyro.updates import LearnedSiteTarget, NaturalGradientUpdate, step_context
from iai_prob.refinement_state import RefinementError, RefinementInfo, RefinementState
from iai_prob.refiner_options import RefinerOptions

__all__ = [
    "Refiner",
    "Schedule",
    "check_state",
    "init",
    "minibatch_schedule",
    "refine",
    "step",
]


class Schedule(NamedTuple):
    """``K`` mini-batches as padded indices ``(K, B_max)`` and validity ``(K, B_max)``."""

    index: jax.Array
    mask: jax.Array


def _split_sizes(num_points: int, num_batches: int) -> list[int]:
    """Sizes of ``torch.tensor_split(range(N), num_batches)``: larger chunks first."""
    base, extra = divmod(num_points, num_batches)
    return [base + 1] * extra + [base] * (num_batches - extra)


def batches_to_schedule(batches) -> Schedule:
    """Pad a list of index arrays (e.g. PyTorch's ``minibatch_schedule``) to a Schedule."""
    width = max(len(b) for b in batches)
    index = np.zeros((len(batches), width), np.int32)
    mask = np.zeros((len(batches), width), bool)
    for row, batch in enumerate(batches):
        index[row, : len(batch)] = np.asarray(batch)
        mask[row, : len(batch)] = True
    return Schedule(jnp.asarray(index), jnp.asarray(mask))


def minibatch_schedule(num_points: int, batch_size: int, num_steps: int, key) -> Schedule:
    """``num_steps`` mini-batches cycling over random partitions of ``range(num_points)``.

    Each pass draws a fresh permutation and splits it into ``⌈N/batch_size⌉`` batches
    whose sizes differ by at most one (as the PyTorch schedule; the permutations come
    from JAX's generator, so the orders differ between backends).
    """
    num_batches = math.ceil(num_points / batch_size)
    sizes = _split_sizes(num_points, num_batches)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    width = max(sizes)
    passes = max(1, math.ceil(num_steps / num_batches))
    keys = jax.random.split(key, passes)
    permutations = jax.vmap(lambda k: jax.random.permutation(k, num_points))(keys)
    offsets = np.arange(width)
    rows = np.minimum(starts[:, None] + offsets, num_points - 1)
    valid = offsets[None, :] < np.asarray(sizes)[:, None]
    index = permutations[:, rows].reshape(-1, width)[:num_steps]
    mask = np.tile(valid, (passes, 1))[:num_steps]
    return Schedule(jnp.where(mask, index, 0).astype(jnp.int32), jnp.asarray(mask))


class Refiner(eqx.Module):
    """Learned pieces of the refinement: set encoder, initial head, update rule.

    Arguments as :class:`iai_prob.inference.refinement.Refiner` (``options.update`` must
    be ``"natural_gradient"``), plus ``key`` for the initialization and ``prior``, the
    prior's location and scale ``(m, s)`` of a standardized refiner (the arrays
    ``prior_loc`` and ``prior_scale``, ``None`` when not standardized; held out of
    training by ``stop_gradient``; PyTorch's buffers of the same names).
    """

    encoder: eqx.Module
    init_head: Linear
    update: NaturalGradientUpdate
    site_target: LearnedSiteTarget | None
    prior_loc: jax.Array | None
    prior_scale: jax.Array | None
    feature_dim: int = eqx.field(static=True)
    family: GaussianFamily = eqx.field(static=True)
    options: RefinerOptions = eqx.field(static=True)

    @property
    def latent_dim(self) -> int:
        """``D``, the family's."""
        return self.family.latent_dim

    def __init__(
        self,
        family: GaussianFamily,
        feature_dim: int,
        options: RefinerOptions | None = None,
        *,
        prior=None,
        key,
    ):
        options = options or RefinerOptions()
        if options.update != "natural_gradient":
            raise ValueError(
                f"update={options.update!r} is implemented in the PyTorch refiner only; the "
                "JAX refiner implements update='natural_gradient'"
            )
        encoder_key, head_key, update_key, site_key = jax.random.split(key, 4)
        self.feature_dim = feature_dim
        self.family = family
        self.options = options
        self.prior_loc = self.prior_scale = None
        if options.standardize:
            dim = family.latent_dim
            loc, scale = (jnp.zeros(dim), jnp.ones(dim)) if prior is None else prior
            self.prior_loc = jnp.asarray(loc, dtype=float)
            self.prior_scale = jnp.asarray(scale, dtype=float)
        self.encoder = get_encoder(
            options.encoder, feature_dim, key=encoder_key, **options.encoder_options
        )
        embed_dim = self.encoder.embed_dim
        self.init_head = Linear(embed_dim, family.num_raw(), key=head_key, zero=True)
        context_dim = options.step_context_dim(embed_dim)
        self.update = NaturalGradientUpdate(context_dim, key=update_key)
        self.site_target = (
            None
            if "grad" in options.signals
            else LearnedSiteTarget(embed_dim, self.family, key=site_key)
        )


def check_state(state: RefinementState) -> RefinementState:
    """Raise :class:`RefinementError` if any task's state is not finite or not PD (eager)."""
    finite = np.isfinite(np.asarray(state.loc)).all(-1) & np.isfinite(
        np.asarray(state.precision)
    ).all((-1, -2))
    precision = np.nan_to_num(np.asarray(state.precision, np.float64))
    positive = np.linalg.eigvalsh(0.5 * (precision + np.swapaxes(precision, -1, -2))).min(-1) > 0
    bad = np.flatnonzero(~(finite & positive)).tolist()
    if bad:
        raise RefinementError(
            f"refinement step {int(np.max(np.asarray(state.step)))}: the posterior state of "
            f"task(s) {bad[:10]} is not finite or not positive definite; check the data for "
            "extreme values, use larger batches or linearization='sigma_points'"
        )
    return state


def _embed(refiner: Refiner, data: TaskData, count):
    """The set encoder on ``data``'s features (through ``asinh`` when standardized)."""
    features = data.features if refiner.prior_loc is None else jnp.arcsinh(data.features)
    return refiner.encoder(features, count, data.point_mask)


def init(refiner: Refiner, context: TaskData) -> RefinementState:
    """``λ_0`` from the context points (all of ``context``) and the count ``N``, read in
    prior units when standardized (:mod:`iai_prob.prior_standardization`)."""
    embedding = _embed(refiner, context, context.dataset_sizes)
    loc, precision = refiner.family.from_raw(refiner.init_head(embedding))
    if refiner.prior_loc is not None:
        prior_loc, scale = jax.lax.stop_gradient((refiner.prior_loc, refiner.prior_scale))
        loc = prior_loc.astype(loc.dtype) + scale.astype(loc.dtype) * loc
        precision = precision / (scale[:, None] * scale[None, :]).astype(precision.dtype)
    zero = jnp.zeros((), jnp.int32)
    return RefinementState(loc, precision, zero, jnp.zeros((), loc.dtype))


def _moved_less(new: RefinementState, old: RefinementState, family, tolerance=0.5):
    """Per task ``(T,)``: whether ``KL(q_new ‖ q_old) < tolerance`` nats."""
    new_loc, new_precision = jax.lax.stop_gradient((new.loc, new.precision))
    old_loc, old_precision = jax.lax.stop_gradient((old.loc, old.precision))
    return gaussian_kl(new_loc, new_precision, old_loc, old_precision) < tolerance


def _keep_where(done, kept: RefinementState, new: RefinementState) -> RefinementState:
    """Per task: ``kept``'s Gaussian where ``done`` (a ``(T,)`` mask), else ``new``'s."""
    return new._replace(
        loc=jnp.where(done[:, None], kept.loc, new.loc),
        precision=jnp.where(done[:, None, None], kept.precision, new.precision),
    )


def _advance(refiner, state, batch, log_joint, targets, embedding, base):
    """Damped step from ``state`` toward the first target (later ones are fallbacks)."""
    first = targets[0]() if callable(targets[0]) else targets[0]
    context = step_context(
        state.step, batch.total_points, batch.num_points, state.loc, state.precision, *first
    )
    if embedding is not None:
        context = jnp.concatenate([context, jax.lax.stop_gradient(embedding)], -1)
    step_size = refiner.update.step_size(state.points_seen, batch.num_points, context)
    makers = [t if callable(t) else (lambda t=t: t) for t in targets]
    loc, precision, used = damped_combine(
        state.loc,
        state.precision,
        step_size,
        makers,
        batch,
        log_joint,
        base=base,
    )
    new_state = RefinementState(
        loc,
        refiner.family.project(precision),
        state.step + 1,
        state.points_seen + batch.num_points,
    )
    return new_state, used


def _linearized_targets(refiner, point, batch, log_joint, key):
    """The CVI target at ``point`` (and, lazily, the one at its mean alone)."""
    signal = curvature_signal(
        log_joint,
        point.loc,
        point.precision,
        batch,
        refiner.options.linearization,
        refiner.options.num_particles,
        key,
    )
    target = natural_gradient_target(
        signal, point.loc, refiner.family, refiner.options.min_precision
    )
    targets = [target]
    if refiner.options.linearization != "mean":

        def mean_target():
            mean_signal = curvature_signal(log_joint, point.loc, point.precision, batch, "mean")
            return natural_gradient_target(
                mean_signal, point.loc, refiner.family, refiner.options.min_precision
            )

        targets.append(mean_target)
    return signal, targets


def step(
    refiner: Refiner, state: RefinementState, batch: TaskData, log_joint, key=None
) -> tuple[RefinementState, RefinementInfo]:
    """``λ_{k+1}`` from ``λ_k`` and the mini-batch ``batch`` (see module docstring)."""
    embedding = None
    if "data" in refiner.options.signals:
        embedding = _embed(refiner, batch, batch.num_points)
    if "grad" not in refiner.options.signals:
        target = refiner.site_target(refiner.family, embedding, batch.likelihood_scale)
        new_state, used = _advance(refiner, state, batch, log_joint, [target], embedding, None)
        return new_state, RefinementInfo(used, jnp.full_like(used, jnp.nan))
    sweeps = refiner.options.max_relinearizations + 1
    keys = None if key is None else jax.random.split(key, sweeps)
    # E_q f_B at the state's sigma points (= the first sweep's signal value): the
    # reference L_B of the damping and the step's diagnostic
    batch_log_joint = unscented_batch_elbo(
        log_joint, state.loc, state.precision, batch
    ) - gaussian_entropy(jax.lax.stop_gradient(state.precision))
    base = None
    if refiner.options.linearization == "sigma_points":
        entropy = gaussian_entropy(jax.lax.stop_gradient(state.precision))
        base = jnp.nan_to_num(batch_log_joint + entropy, nan=-jnp.inf)
    else:
        signal = curvature_signal(
            log_joint,
            state.loc,
            state.precision,
            batch,
            refiner.options.linearization,
            refiner.options.num_particles,
            None if keys is None else keys[0],
        )
        batch_log_joint = signal.log_joint

    def sweep(carry, sweep_key):
        # one linearization sweep: the target at ``point``, a damped step from ``state``;
        # each task keeps the step of the first sweep that moved it less than 0.5 nats from
        # ``point``, so a task's result never depends on the other tasks of its batch
        point, result, used, done = carry

        def relinearize():
            fixed = jax.tree_util.tree_map(jax.lax.stop_gradient, point)
            _, targets = _linearized_targets(refiner, fixed, batch, log_joint, sweep_key)
            proposal, step_used = _advance(
                refiner, state, batch, log_joint, targets, embedding, base
            )
            moved_less = _moved_less(proposal, fixed, refiner.family)
            kept = _keep_where(done, result, proposal)
            return proposal, kept, jnp.where(done, used, step_used), done | moved_less

        return jax.lax.cond(done.all(), lambda: carry, relinearize), None

    num_tasks = state.loc.shape[0]
    undecided = jnp.zeros(num_tasks, bool)
    # the first sweep always runs and replaces this placeholder result
    first = state._replace(step=state.step + 1, points_seen=state.points_seen + batch.num_points)
    start = (state, first, jnp.zeros(num_tasks, state.loc.dtype), undecided)
    (_, new_state, used, _), _ = jax.lax.scan(sweep, start, keys, length=sweeps)
    return new_state, RefinementInfo(used, batch_log_joint)


def refine(
    refiner: Refiner,
    data: TaskData,
    schedule: Schedule,
    log_joint,
    *,
    context_index=None,
    key=None,
    greedy: bool = True,
    trajectory: bool = False,
):
    """``λ_K`` (or all of ``λ_1 … λ_K`` with ``trajectory=True``) by one ``lax.scan``.

    ``context_index`` picks the points the one-shot encoder sees (all by default): an
    index ``(C,)``, or per task a pair ``(index, valid)`` of ``(T, C)`` arrays
    (:meth:`~iai_prob.numpyro.task_data.TaskData.take_per_task`, a padded batch).
    Returns ``(λ_0, λ_K or stacked states, stacked RefinementInfo)``.
    """
    if context_index is None:
        context = data
    elif isinstance(context_index, tuple):
        context = data.take_per_task(*context_index)
    else:
        context = data.subset(context_index)
    state = init(refiner, context)
    keys = None
    if key is not None:
        keys = jax.random.split(key, schedule.index.shape[0])

    def body(carry, inputs):
        index, mask, step_key = inputs
        if greedy:
            carry = jax.tree_util.tree_map(jax.lax.stop_gradient, carry)
        new, info = step(refiner, carry, data.subset(index, mask), log_joint, step_key)
        return new, ((new if trajectory else None), info)

    final, (states, infos) = jax.lax.scan(body, state, (schedule.index, schedule.mask, keys))
    return state, (states if trajectory else final), infos
