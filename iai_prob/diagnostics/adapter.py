"""One small adapter between an approximate posterior and every diagnostic.

Every diagnostic in :mod:`iai_prob.diagnostics` needs the same few things from an
approximate posterior ``q(z | D)`` over the joint unconstrained global latents ``z``
(:mod:`iai_prob.inference.sites`) of a model ``p(θ, D)``, for one dataset or a batch of
tasks:

* draws ``z_s ~ q`` with ``log q(z_s)`` and the constrained values ``θ_s = T(z_s)``;
* the log joint ``log p(z_s, D) = log p(D, T(z_s)) + log |det ∂T/∂z|`` (so that the
  log importance weights are ``log w_s = log p(z_s, D) − log q(z_s)``, Yao et al. 2018);
* the pointwise log-likelihood ``log p(y_n | θ_s)`` of every observation (for PSIS-LOO,
  Vehtari, Gelman, Gabry 2017), the posterior predictive ``y_rep ~ p(y | θ_s)``, and the
  observed and constant data with the names of the plates they live in.

:class:`ApproximatePosterior` provides them for a Pyro model, from an
:class:`~iai_prob.inference.IterativeAmortizedGuide` or from any callable returning a torch
distribution over ``z`` (an exact posterior, a shrunk one, another amortizer). Arrays are
sample-first: ``(S, T, …)`` with the task axis ``T`` kept (``T = 1`` for one dataset).

A NumPyro guide, passed as the pair ``(guide, params)``, is adapted by
:class:`~iai_prob.diagnostics.numpyro_adapter.NumPyroPosterior` (imported, with JAX, only
when one is passed), which provides the same members
(:class:`~iai_prob.diagnostics.posterior_source.PosteriorSource`):
``layout``, ``num_tasks``/``batched``/``num_points``, ``draw``, ``sample_latent``,
``moments``, ``site_dims``, ``pointwise_log_likelihood``, ``posterior_predictive``,
``observed``/``constant`` (arrays convertible with ``numpy``), plus ``task`` and ``model``
for the report and the NUTS comparison.
"""

from __future__ import annotations

import sys

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from iai_prob.diagnostics.posterior_source import (
    NamedArray,
    PosteriorAdapter,
    PosteriorDraws,
    check_num_draws,
    checked_distribution,
)
from iai_prob.inference.guide import IterativeAmortizedGuide, PreparedTask, prepare_task
from iai_prob.models.base import TaskFamily

__all__ = [
    "ApproximatePosterior",
    "approximate_posterior",
    "is_numpyro",
    "log_joint_per_draw",
]

_PARTICLES = "_iai_diagnostic_draws"


def log_joint_per_draw(
    task: PreparedTask, z: torch.Tensor, *, max_elements: int = 2**22
) -> torch.Tensor:
    """``log p(z_s, D_t)`` for draws ``z`` of shape ``(S, T_flat, D)``; returns ``(S, T_flat)``.

    Vectorized over tasks and over chunks of draws holding about ``max_elements``
    (draws × tasks × points) per model evaluation, so memory stays bounded for large ``N``;
    enumerated discrete sites are summed out per draw and task (``LogJoint.per_particle``).
    """
    log_joint, data = task.log_joint, task.data
    per_chunk = max(1, max_elements // (z.shape[1] * data.num_points))
    return torch.cat(
        [
            log_joint.per_particle(z[start : start + per_chunk], data)
            for start in range(0, z.shape[0], per_chunk)
        ]
    )


class ApproximatePosterior(PosteriorAdapter):
    """``q(z | D)`` for a Pyro model's global latents, with the model to check it against.

    :param distribution: a torch distribution over the joint unconstrained latents with
        batch shape ``(T,)`` (or ``()`` for one dataset) and event shape ``(D,)``.
    :param PreparedTask task: the model's layout, data and log joint
        (:func:`~iai_prob.inference.guide.prepare_task`).
    :param model: the Pyro model.
    """

    def __init__(self, distribution, task: PreparedTask, model):
        self.distribution = checked_distribution(distribution, task.layout, task.layout.flat_tasks)
        self.task = task
        self.layout = task.layout
        self.model = model
        self._particle_dim = -(task.layout.max_plate_nesting + 1)
        with poutine.block():
            self._trace = poutine.trace(model).get_trace(*task.data.args, **task.data.kwargs)

    @property
    def num_tasks(self) -> int:
        return self.layout.flat_tasks

    @property
    def batched(self) -> bool:
        return self.layout.num_tasks is not None

    @property
    def num_points(self) -> int:
        return int(self.task.data.num_points)

    # ---------------------------------------------------------------- draws
    @torch.no_grad()
    def sample_latent(self, num_samples: int, *, seed: int = 0) -> torch.Tensor:
        """``z ~ q``: ``(S, T, D)``, seeded without touching the global torch RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.distribution.sample((int(num_samples),))

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of ``q`` over ``z``, ``(T, D)`` each."""
        return self.distribution.mean, self.distribution.variance.sqrt()

    @torch.no_grad()
    def draw(self, num_samples: int, *, seed: int = 0) -> PosteriorDraws:
        """``num_samples`` seeded draws per task with their log densities."""
        num_samples = check_num_draws(num_samples)
        z = self.sample_latent(num_samples, seed=seed)
        values = {site.name: value for site, value, _ in self.layout.unpack(z)}
        return PosteriorDraws(
            z, values, self.distribution.log_prob(z), log_joint_per_draw(self.task, z)
        )

    def _trace_sites(self):
        return self._trace.nodes.values()

    # ---------------------------------------------------- model evaluations
    def _conditioned(self, z: torch.Tensor, *, resample_observed: bool):
        model_z = self.layout.particles_to_model(z, self._particle_dim)
        unpacked = self.layout.unpack(model_z, model_shapes=True)
        values = {site.name: value for site, value, _ in unpacked}
        model = poutine.uncondition(self.model) if resample_observed else self.model
        model = poutine.condition(model, data=values)
        num, dim = z.shape[0], self._particle_dim

        def vectorized(*args, **kwargs):
            with pyro.plate(_PARTICLES, num, dim=dim):
                return model(*args, **kwargs)

        return vectorized

    def _observed_sites(self, trace):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            observed = site["is_observed"] or site["infer"].get("was_observed", False)
            if observed and name not in self.layout.site_names:
                yield name, site

    def _named(self, name: str, site, value: torch.Tensor, event_dim: int) -> NamedArray:
        """``value`` with the particle dim first, broadcast plates named, size-1 dims dropped."""
        batch_dims = -self._particle_dim
        value = value.reshape((1,) * (batch_dims + event_dim - value.dim()) + value.shape)
        frames = {frame.dim: frame.name for frame in site["cond_indep_stack"]}
        dims, keep = [], [0]
        for position in range(1, batch_dims):
            dim = position - batch_dims
            if dim in frames:
                dims.append(frames[dim])
                keep.append(position)
            elif value.shape[position] != 1:
                dims.append(f"{name}_batch_{position}")
                keep.append(position)
        keep += range(batch_dims, value.dim())
        value = value.squeeze(
            tuple(p for p in range(1, batch_dims) if p not in keep and value.shape[p] == 1)
        )
        event_shape = tuple(value.shape[value.dim() - event_dim :])
        return self._with_dims(name, value, dims, event_shape)

    @torch.no_grad()
    def pointwise_log_likelihood(self, z: torch.Tensor) -> dict[str, NamedArray]:
        """``log p(y_n | T(z_s))`` of each observed site, ``(S, *plates)`` with named dims.

        With enumerated discrete local sites (mixture assignments) the locals are summed
        out per data point and the marginal is reported under the first observed site.
        """
        model = self._conditioned(z, resample_observed=False)
        if self.task.log_joint.enumerate:
            model = poutine.enum(model, first_available_dim=self._particle_dim - 1)
        with poutine.block(), pyro.validation_enabled(False):
            trace = poutine.trace(model).get_trace(*self.task.data.args, **self.task.data.kwargs)
        trace.compute_log_prob()
        if not self.task.log_joint.enumerate:
            return {
                name: self._named(name, site, site["log_prob"], 0)
                for name, site in self._observed_sites(trace)
            }
        return self._enumerated_log_likelihood(trace)

    def _enumerated_log_likelihood(self, trace) -> dict[str, NamedArray]:
        data_plate = self.task.log_joint.data_plate
        total, first = 0.0, None
        for name, site in trace.nodes.items():
            in_data = any(f.name == data_plate for f in site.get("cond_indep_stack", ()))
            if site["type"] == "sample" and in_data and not site_is_subsample(site):
                total = total + site["log_prob"]
                if first is None and site["is_observed"] and name not in self.layout.site_names:
                    first = (name, site)
        enum_dims = tuple(range(total.dim() + self._particle_dim))
        marginal = total.logsumexp(enum_dims) if enum_dims else total
        return {first[0]: self._named(first[0], first[1], marginal, 0)}

    @torch.no_grad()
    def posterior_predictive(self, z: torch.Tensor, *, seed: int = 0) -> dict[str, NamedArray]:
        """Replicated observations ``y_rep ~ p(y | T(z_s))``, one per draw, named dims."""
        model = self._conditioned(z, resample_observed=True)
        with torch.random.fork_rng(devices=[]), poutine.block():
            torch.manual_seed(seed)
            trace = poutine.trace(model).get_trace(*self.task.data.args, **self.task.data.kwargs)
        return {
            name: self._named(name, site, site["value"], len(site["fn"].event_shape))
            for name, site in self._observed_sites(trace)
        }

    # ----------------------------------------------------------------- data
    def observed(self) -> dict[str, NamedArray]:
        """The observed sites' values with their plate names (no sample dim)."""
        result = {}
        for name, site in self._observed_sites(self._trace):
            value = site["value"].unsqueeze(0)
            named = self._named(name, site, value, len(site["fn"].event_shape))
            result[name] = NamedArray(named.value[0], named.dims)
        return result

    def _user_arguments(self) -> tuple[tuple, dict]:
        return self.task.data.args, self.task.data.kwargs

    def _observed_ids(self) -> set[int]:
        return {id(site["value"]) for _, site in self._observed_sites(self._trace)}

    _is_array = staticmethod(torch.is_tensor)


def is_numpyro(posterior, model=None, args=()) -> bool:
    """Whether ``posterior`` / ``model`` / the data belong to NumPyro (imports no JAX).

    True for a ``(guide, params)`` pair of a NumPyro guide, a task family bound to NumPyro
    (``family.on("numpyro")``) or data given as JAX arrays. An object can only be one of
    NumPyro's if the module defining it was imported already, so this looks the guide's
    class up in ``sys.modules``.
    """
    guide_module = sys.modules.get("iai_prob.numpyro.guide")
    guide = posterior[0] if isinstance(posterior, tuple) and posterior else posterior
    if guide_module is not None and isinstance(guide, guide_module.IterativeAmortizedGuide):
        return True
    if isinstance(model, TaskFamily) and model.backend == "numpyro":
        return True
    return any(type(arg).__module__.split(".")[0] in ("jax", "jaxlib") for arg in args)


def approximate_posterior(
    posterior,
    model,
    *args,
    data_plate: str = "data",
    tasks_plate: str = "tasks",
    **kwargs,
) -> ApproximatePosterior:
    """Adapt ``posterior`` on the data ``*args, **kwargs`` of ``model`` for the diagnostics.

    :param posterior: an :class:`~iai_prob.inference.IterativeAmortizedGuide` (its ``λ_K``
        for this data), or a callable ``posterior(*args, **kwargs)`` returning a torch
        distribution over the joint unconstrained latents, batch ``(T,)`` or ``()``.
    :param model: the Pyro model (a :class:`~iai_prob.models.base.TaskFamily` or ``None``
        takes the guide's own model).

    NumPyro: pass a NumPyro guide as the pair ``(guide, params)``, or a callable returning
    a NumPyro distribution with a NumPyro model / task family or JAX data; the result is a
    :class:`~iai_prob.diagnostics.numpyro_adapter.NumPyroPosterior` (imports JAX).
    """
    if is_numpyro(posterior, model, args):
        from iai_prob.diagnostics.numpyro_adapter import numpyro_posterior

        return numpyro_posterior(
            posterior, model, *args, data_plate=data_plate, tasks_plate=tasks_plate, **kwargs
        )
    if torch.is_tensor(model) or not (
        model is None or callable(model) or isinstance(model, TaskFamily)
    ):
        raise ValueError(
            f"model must be a Pyro model, a TaskFamily or None, got {type(model).__name__}; "
            "the data come after it, e.g. to_inference_data(guide, None, x, y)"
        )
    if isinstance(posterior, IterativeAmortizedGuide):
        model = posterior.model if model is None else getattr(model, "model", model)
        task = posterior._prepared(*args, **kwargs)
        with torch.no_grad():
            state, _ = posterior.solve(task)  # the default answer, converged
        distribution = posterior.refiner.family.distribution(state.loc, state.precision)
        return ApproximatePosterior(distribution, task, model)
    if not callable(posterior):
        raise ValueError(
            "posterior must be an IterativeAmortizedGuide or a callable returning a torch "
            f"distribution over the unconstrained latents, got {type(posterior).__name__}"
        )
    if model is None:
        raise ValueError("model is required when posterior is not an IterativeAmortizedGuide")
    model = getattr(model, "model", model)
    task = prepare_task(model, args, kwargs, data_plate=data_plate, tasks_plate=tasks_plate)
    with torch.no_grad():
        distribution = posterior(*args, **kwargs)
    return ApproximatePosterior(distribution, task, model)
