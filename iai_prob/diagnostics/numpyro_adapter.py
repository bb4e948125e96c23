"""The diagnostics' adapter for NumPyro: a NumPyro ``q(z | D)`` read through NumPyro.

The twin of :class:`~iai_prob.diagnostics.adapter.ApproximatePosterior` for the NumPyro
port (:mod:`iai_prob.numpyro`), with the same members (the
:class:`~iai_prob.diagnostics.posterior_source.PosteriorSource` protocol), so that
:func:`~iai_prob.diagnostics.to_inference_data`, :func:`~iai_prob.diagnostics.psis_khat`,
:func:`~iai_prob.diagnostics.importance_resample`, :func:`~iai_prob.diagnostics.sbc` and
:func:`~iai_prob.diagnostics.report` take a NumPyro guide unchanged. Every model quantity
comes from NumPyro, never from the Pyro model:

* ``log p(z, D) = log p(D, T(z)) + log |det ∂T/∂z|`` from
  :func:`numpyro.infer.util.log_density` (funsor's enumerated ``log_density`` for models
  with enumerated discrete locals, through the guide's
  :class:`~iai_prob.numpyro.log_joint.LogJoint`);
* ``log p(y_n | θ_s)`` from :func:`numpyro.infer.log_likelihood`;
* ``y_rep ~ p(y | θ_s)`` from :class:`numpyro.infer.Predictive` on the unconditioned model.

Tasks are vectorized with ``jax.vmap`` (one dataset per model call, as the guide's log
joint does). Arrays come back as NumPy arrays, sample-first ``(S, T, …)``.

A NumPyro guide is passed as the pair ``(guide, params)`` (what
:func:`iai_prob.numpyro.pretrained.load` and :func:`iai_prob.numpyro.fit` give); a
callable ``(*data) -> numpyro distribution`` over the unconstrained latents (an exact
posterior) with a NumPyro model or task family is accepted too. This module imports JAX,
so :mod:`iai_prob.diagnostics` only imports it when such a posterior is passed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer import Predictive, log_likelihood
from numpyro.infer.util import log_density

from iai_prob.diagnostics.posterior_source import (
    NamedArray,
    PosteriorAdapter,
    PosteriorDraws,
    check_num_draws,
    checked_distribution,
)
from iai_prob.models.base import TaskFamily
from iai_prob.numpyro.guide import IterativeAmortizedGuide
from iai_prob.numpyro.task_data import trace_model

__all__ = ["NumPyroPosterior", "numpyro_posterior", "simulate", "split_guide"]


def split_guide(posterior) -> tuple[IterativeAmortizedGuide, dict]:
    """``(guide, params)`` of a NumPyro guide passed as that pair, else a ``ValueError``."""
    if isinstance(posterior, IterativeAmortizedGuide):
        raise ValueError("a NumPyro guide needs its parameters: pass (guide, params)")
    if (
        not isinstance(posterior, tuple)
        or len(posterior) != 2
        or not isinstance(posterior[0], IterativeAmortizedGuide)
        or not isinstance(posterior[1], dict)
    ):
        raise ValueError(
            "a NumPyro guide is passed as the pair (guide, params), e.g. "
            "to_inference_data((guide, params), None, x, y)"
        )
    return posterior


def simulate(family: TaskFamily, num_tasks: int, num_points: int, *, seed: int = 0):
    """``(θ, x, y)`` from the family's simulator under NumPyro, seeded by ``seed``."""
    return family.on("numpyro").sample(jax.random.PRNGKey(seed), num_tasks, num_points)


class NumPyroPosterior(PosteriorAdapter):
    """``q(z | D)`` for a NumPyro model's global latents, with the model to check it against.

    :param distribution: a NumPyro distribution over the joint unconstrained latents with
        batch shape ``(T,)`` (or ``()`` for one dataset) and event shape ``(D,)``.
    :param task: the guide's :class:`~iai_prob.numpyro.guide.PreparedTask` for the data.
    :param model: the NumPyro model.
    :param args: the data as the user passed them (for the observed and constant data).
    """

    def __init__(self, distribution, task, model, args: tuple, kwargs: dict):
        layout = task.layout
        self.distribution = checked_distribution(distribution, layout, task.data.num_tasks)
        self.task = task
        self.layout = layout
        self.model = model
        self._args, self._kwargs = tuple(args), dict(kwargs)
        self._trace = trace_model(model, self._args, self._kwargs)
        task_args, task_kwargs = task.data.task(0)
        self._task_trace = trace_model(model, task_args, task_kwargs)

    @property
    def num_tasks(self) -> int:
        return self.task.data.num_tasks

    @property
    def batched(self) -> bool:
        return self.task.data.batched

    @property
    def num_points(self) -> int:
        return int(self.task.data.size)

    def _trace_sites(self):
        return self._trace.values()

    # ---------------------------------------------------------------- draws
    def sample_latent(self, num_samples: int, *, seed: int = 0) -> np.ndarray:
        """``z ~ q``: ``(S, T, D)``."""
        key = jax.random.PRNGKey(seed)
        return np.asarray(self.distribution.sample(key, (int(num_samples),)))

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of ``q`` over ``z``, ``(T, D)`` each."""
        return np.asarray(self.distribution.mean), np.sqrt(np.asarray(self.distribution.variance))

    def draw(self, num_samples: int, *, seed: int = 0) -> PosteriorDraws:
        """``num_samples`` seeded draws per task with their log densities."""
        num_samples = check_num_draws(num_samples)
        z = jnp.asarray(self.sample_latent(num_samples, seed=seed))
        values = {site.name: np.asarray(value) for site, value, _ in self.layout.unpack(z)}
        return PosteriorDraws(
            np.asarray(z),
            values,
            np.asarray(self.distribution.log_prob(z)),
            np.asarray(self.log_joint(z)),
        )

    # ---------------------------------------------------- model evaluations
    def _per_task(self, fn, z, *extra):
        """``fn(z_task (S, D), args, kwargs, *extra)`` vmapped over the tasks of ``z``
        ``(S, T, D)``; results come back ``(S, T, …)``."""
        data = self.task.data
        mapped = jax.vmap(fn, in_axes=(1, *data.in_axes(), *(0,) * len(extra)))
        result = mapped(jnp.asarray(z), data.args, data.kwargs, *extra)
        return jax.tree_util.tree_map(lambda leaf: jnp.moveaxis(leaf, 0, 1), result)

    def _values(self, z):
        return {site.name: value for site, value, _ in self.layout.unpack(z)}

    def log_joint(self, z) -> jax.Array:
        """``log p(z_s, D_t)`` for draws ``z`` ``(S, T, D)``; returns ``(S, T)``."""
        if self.task.log_joint.enumerate:  # funsor marginalizes the discrete locals
            return self.task.log_joint.per_particle(jnp.asarray(z), self.task.data)
        model = self.model

        def single(z_point, args, kwargs):
            log_jacobian = sum(j for _, _, j in self.layout.unpack(z_point))
            return log_density(model, args, kwargs, self._values(z_point))[0] + log_jacobian

        return self._per_task(jax.vmap(single, in_axes=(0, None, None)), z)

    def _observed_names(self) -> list[str]:
        return [
            name
            for name, site in self._task_trace.items()
            if site["type"] == "sample"
            and site["is_observed"]
            and name not in self.layout.site_names
        ]

    def _named(self, name: str, value, event_dim: int, trace) -> NamedArray:
        """``value`` ``(lead…, *batch, *event)`` with its batch dims named by ``trace``'s plates."""
        site = trace[name]
        frames = {frame.dim: frame.name for frame in site["cond_indep_stack"]}
        num_batch = len(site["fn"].batch_shape)
        batch = [frames.get(i - num_batch, f"{name}_batch_{i}") for i in range(num_batch)]
        event_shape = tuple(np.shape(value))[np.ndim(value) - event_dim :] if event_dim else ()
        return self._with_dims(name, np.asarray(value), batch, event_shape)

    def _sampled(self, name: str, value, event_dim: int) -> NamedArray:
        """``(S, T, …)`` per-task values named, the task axis kept only for a batch."""
        value = np.asarray(value)
        value = value if self.batched else value[:, 0]
        named = self._named(name, value, event_dim, self._task_trace)
        lead = (self._tasks_name(),) if self.batched else ()
        return NamedArray(named.value, (*lead, *named.dims))

    def pointwise_log_likelihood(self, z) -> dict[str, NamedArray]:
        """``log p(y_n | T(z_s))`` of each observed site (``numpyro.infer.log_likelihood``)."""
        model = self.model

        def per_task(z_task, args, kwargs):
            return log_likelihood(model, self._values(z_task), *args, parallel=True, **kwargs)

        pointwise = self._per_task(per_task, z)
        return {name: self._sampled(name, pointwise[name], 0) for name in self._observed_names()}

    def posterior_predictive(self, z, *, seed: int = 0) -> dict[str, NamedArray]:
        """``y_rep ~ p(y | T(z_s))`` by :class:`numpyro.infer.Predictive` (observations freed)."""
        names = self._observed_names()
        predictive_model = handlers.uncondition(self.model)

        def per_task(z_task, args, kwargs, key):
            predictive = Predictive(
                predictive_model, posterior_samples=self._values(z_task), return_sites=names
            )
            return predictive(key, *args, **kwargs)

        keys = jax.random.split(jax.random.PRNGKey(seed), self.num_tasks)
        replicated = self._per_task(per_task, z, keys)
        return {
            name: self._sampled(
                name, replicated[name], len(self._task_trace[name]["fn"].event_shape)
            )
            for name in names
        }

    # ----------------------------------------------------------------- data
    def observed(self) -> dict[str, NamedArray]:
        """The observed sites' values with their plate names (no sample dim)."""
        result = {}
        for name, site in self._trace.items():
            if site["type"] != "sample" or not site["is_observed"]:
                continue
            fn = site["fn"]
            value = jnp.broadcast_to(site["value"], (*fn.batch_shape, *fn.event_shape))
            result[name] = self._named(name, value, len(fn.event_shape), self._trace)
        return result

    def _user_arguments(self) -> tuple[tuple, dict]:
        return self._args, self._kwargs

    def _observed_ids(self) -> set[int]:
        return {
            id(site["value"])
            for site in self._trace.values()
            if site["type"] == "sample" and site["is_observed"]
        }

    @staticmethod
    def _is_array(value) -> bool:
        return isinstance(value, jax.Array | np.ndarray) and np.issubdtype(value.dtype, np.number)


def _numpyro_model(model):
    """The NumPyro model of ``model``: a task family's, run under NumPyro, or ``model``."""
    return model.on("numpyro").model if isinstance(model, TaskFamily) else model


def numpyro_posterior(
    posterior, model, *args, data_plate: str = "data", tasks_plate: str = "tasks", **kwargs
) -> NumPyroPosterior:
    """Adapt a NumPyro ``posterior`` on the data ``*args, **kwargs`` for the diagnostics.

    :param posterior: ``(guide, params)`` with a NumPyro
        :class:`~iai_prob.numpyro.IterativeAmortizedGuide` (its default, converged answer
        for this data), or a
        callable ``posterior(*args, **kwargs)`` returning a NumPyro distribution over the
        joint unconstrained latents, batch ``(T,)`` or ``()``.
    :param model: the NumPyro model or a :class:`~iai_prob.models.base.TaskFamily` (run
        under NumPyro; ``None`` takes the guide's own model).
    """
    if isinstance(posterior, tuple | IterativeAmortizedGuide):
        guide, params = split_guide(posterior)
        model = guide.model if model is None else _numpyro_model(model)
        task = guide.prepare(*args, **kwargs)
        distribution = guide.posterior(params, *args, **kwargs)
        return NumPyroPosterior(distribution, task, model, args, kwargs)
    if not callable(posterior):
        raise ValueError(
            "posterior must be (guide, params) or a callable returning a NumPyro distribution "
            f"over the unconstrained latents, got {type(posterior).__name__}"
        )
    if model is None:
        raise ValueError("model is required when posterior is not a (guide, params) pair")
    model = _numpyro_model(model)
    # an unbuilt guide reads the model's layout and data exactly as a trained one would
    reader = IterativeAmortizedGuide(model, data_plate=data_plate, tasks_plate=tasks_plate)
    task = reader.prepare(*args, **kwargs)
    return NumPyroPosterior(posterior(*args, **kwargs), task, model, args, kwargs)
