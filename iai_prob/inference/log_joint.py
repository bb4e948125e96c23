"""The model's log joint in unconstrained space, on a mini-batch, for a batch of particles.

For a mini-batch ``B`` of a dataset of size ``N`` the refinement needs

    f_B(z) = log p(T(z)) + log |det ∂T/∂z| + (N/|B|) Σ_{n∈B} log p(y_n | x_n, T(z)),

an unbiased estimate of the log joint ``log p(z, D)`` (Hoffman et al. 2013), and its
gradient and Hessian in ``z``. The model is run under ``poutine.condition`` with the
globals set to ``T(z)``, inside an extra particle plate at dim ``-(P+1)`` so that ``S``
particles and ``T`` tasks are evaluated in one vectorized pass, and the sites in the
data plate are scaled by ``N/|B|``.

Models with enumerated discrete locals ``c`` (e.g. mixture assignments) are marginalized
exactly, still in one vectorized pass: the enumerated sites' factors are contracted with
Pyro's tensor message passing (``contract_tensor_tree`` in the log-sum-exp ring, as
``TraceEnum_ELBO`` does; Obermeyer et al. 2019, "Tensor variable elimination for
plated factor graphs"), which sums out ``c`` but keeps every plate dim, so

    f_B(z_s)_t = Σ_{non-enumerated sites} log p + Σ_{plates} log Σ_c Π p(c, y | z_s)

is read off per particle ``s`` and task ``t`` instead of as one scalar.

The model must therefore broadcast over batch dims left of its plates, as Pyro's
vectorized ELBOs also require: a global's value has shape ``(S, 1…, *event_shape)``.
A model that does not (``x @ w`` for a vector ``w``) fails in its own tensor code; that
failure is re-raised as a ``ValueError`` that says how to write it instead.

Running the model under Pyro's handlers costs far more than its arithmetic, so the
non-enumerated path runs it once per input signature and replays the recorded tensor
operations afterwards (:mod:`~iai_prob.inference.traced_log_joint`; the data and
``N/|B|`` are inputs of the replayed graph), falling back to the Pyro path whenever a
model cannot be traced. :meth:`LogJoint.site` and the enumerated path always run eagerly.
"""

from __future__ import annotations

import contextlib
import warnings

import pyro
import torch
from pyro import poutine
from pyro.infer.traceenum_elbo import _compute_model_factors
from pyro.ops import packed
from pyro.ops.contract import contract_tensor_tree
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.indep_messenger import IndepMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

from iai_prob.inference.compiled_log_joint import replayed_value_and_grad
from iai_prob.inference.task_data import TaskData
from iai_prob.inference.traced_log_joint import (
    traced_per_particle,
    traced_solve,
    traced_value_and_grad,
    tracing_enabled,
)
from iai_prob.latent_layout import LatentLayout

__all__ = ["BoundLogJoint", "LogJoint"]

_PARTICLES = "_iai_particles"


class _ScaleAndMaskDataPlate(Messenger):
    """Multiply the scale of every site inside the data plate by ``factor``, and mask its
    observed sites with a padded batch's ``mask`` ``(T, N)`` (placed at the tasks plate's
    dim ``tasks_dim`` and the data plate's own): a padded point's ``log p(y_n | …)`` is 0,
    and an enumerated discrete local, left unmasked, sums its normalized probabilities
    to one there, adding nothing (as Pyro's ``TraceEnum_ELBO`` requires, the scale stays
    one number)."""

    def __init__(self, plate_name: str, factor: float, mask=None, tasks_dim: int | None = None):
        super().__init__()
        self.plate_name = plate_name
        self.factor = factor
        self.mask = mask
        self.tasks_dim = tasks_dim

    def _process_message(self, msg):
        frame = next((f for f in msg["cond_indep_stack"] if f.name == self.plate_name), None)
        if frame is None:
            return
        msg["scale"] = self.factor * msg["scale"]
        if self.mask is not None and msg["is_observed"]:
            mask = self._placed(frame.dim)
            msg["mask"] = mask if msg["mask"] is None else msg["mask"] & mask

    def _placed(self, data_dim: int) -> torch.Tensor:
        rank = max(-data_dim, -self.tasks_dim)
        shape = [1] * rank
        shape[rank + self.tasks_dim], shape[rank + data_dim] = self.mask.shape
        return self.mask.reshape(shape)


class LogJoint:
    """``f_B(z)`` for a model, summed over particles and tasks (tasks are independent).

    :param model: the Pyro model.
    :param LatentLayout layout: where the globals sit in ``z``.
    :param str data_plate: name of the data plate.
    :param bool enumerate: marginalize enumerated discrete local sites.
    :param bool traced: evaluate the non-enumerated log joint through a graph traced once
        per input signature (:mod:`~iai_prob.inference.traced_log_joint`), with the eager
        Pyro path as fallback; ``False``, or the environment variable
        ``IAI_TRACE_LOG_JOINT=0``, runs the model under Pyro on every call.
    """

    def __init__(
        self,
        model,
        layout: LatentLayout,
        data_plate: str,
        enumerate: bool,
        *,
        traced: bool = True,
    ):
        self.model = model
        self.layout = layout
        self.data_plate = data_plate
        self.enumerate = enumerate
        self.traced = traced

    def per_particle(self, z: torch.Tensor, data: TaskData) -> torch.Tensor:
        """``f_B`` at particles ``z`` of shape ``(S, T_flat, D)``; returns ``(S, T_flat)``.

        Enumerated discrete sites are summed out exactly (see the module docstring).
        """
        if self._traceable():
            value = traced_per_particle(self, z, data, self._particle_dim())
            if value is not None:
                return value
        return self._untraced_per_particle(z, data)

    def value_and_grad(self, z: torch.Tensor, data: TaskData) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f_B, ∇_z f_B)`` at particles ``z`` ``(S, T_flat, D)``: ``(S, T_flat)`` and
        ``(S, T_flat, D)``, detached (particles and tasks are independent, so ``∇`` of
        the sum is each one's own gradient). A signature replayed often runs one compiled
        kernel for both (:mod:`~iai_prob.inference.compiled_log_joint`)."""
        if self._traceable():
            result = traced_value_and_grad(self, z, data, self._particle_dim())
            if result is not None:
                return result
        return replayed_value_and_grad(lambda point: self._untraced_per_particle(point, data), z)

    def solve(self, function, data: TaskData, state: tuple, options: tuple = ()):
        """A solver step ``function(log_joint, *state, *options, traceable=…)`` on ``f_B``
        (``log_joint``: this one bound to ``data``, with ``value_and_grad(z)`` and
        ``per_particle(z)``): one compiled kernel where the signature of the sigma points
        of ``N(state[0], state[1]⁻¹)`` is compiled
        (:meth:`~iai_prob.inference.compiled_log_joint.CompiledLogJoint.solve`)."""
        if self._traceable():
            result = traced_solve(self, function, data, self._particle_dim(), state, options)
            if result is not None:
                return result
        return function(BoundLogJoint(self, data), *state, *options, traceable=False)

    def _traceable(self) -> bool:
        return not self.enumerate and self.traced and tracing_enabled()

    def _untraced_per_particle(self, z: torch.Tensor, data: TaskData) -> torch.Tensor:
        if self.enumerate:
            return self._enumerated_per_particle(z, data)
        return self.eager_per_particle(
            z, data.args, data.kwargs, data.likelihood_scale, self._particle_dim(), mask=data.mask
        )

    def eager_per_particle(
        self,
        z: torch.Tensor,
        args: tuple,
        kwargs: dict,
        likelihood_scale,
        particle_dim: int,
        *,
        validate: bool = True,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``f_B`` ``(S, T_flat)`` by running the model under Pyro on ``*args, **kwargs``,
        its data-plate sites scaled by ``likelihood_scale`` (a float or a 0-d tensor).

        ``validate=False`` skips Pyro's NaN/inf warnings of each site's ``log_prob``
        (tensor values that a traced graph cannot inspect).
        """
        trace = self._trace(
            z, args, kwargs, likelihood_scale, particle_dim, validate=validate, mask=mask
        )
        total = self._log_jacobian(z)
        for site in trace.nodes.values():
            if site["type"] == "sample" and not site_is_subsample(site):
                total = total + self._per_task(site["log_prob"], particle_dim)
        return total

    def per_task_mean(self, z: torch.Tensor, data: TaskData) -> torch.Tensor:
        """``f_B`` averaged over the particles, per task ``(T_flat,)``."""
        return self.per_particle(z, data).mean(0)

    def __call__(self, z: torch.Tensor, data: TaskData) -> torch.Tensor:
        """``Σ_{particles, tasks} f_B(z)`` for ``z`` of shape ``(S, T_flat, D)``."""
        return self.per_particle(z, data).sum()

    def site(self, z: torch.Tensor, data: TaskData, name: str) -> dict:
        """The trace site ``name`` of the model run at particles ``z`` ``(S, T_flat, D)``.

        Its ``fn`` has batch dims ``(S, [T,] N)``: the per-point predictive of each
        posterior draw (discrete local sites, if any, are sampled, not summed out).
        """
        trace = self._trace(
            z,
            data.args,
            data.kwargs,
            data.likelihood_scale,
            self._particle_dim(),
            mask=data.mask,
        )
        if name not in trace.nodes:
            raise ValueError(f"the model has no site named {name!r}")
        return trace.nodes[name]

    # ----------------------------------------------------------------- helpers
    def _particle_dim(self) -> int:
        """A plate dim left of the model's plates and of any plate active around the call
        (e.g. the particle plate of ``psis_diagnostic``)."""
        active = [
            -frame.dim
            for frame in _PYRO_STACK
            if isinstance(frame, IndepMessenger) and frame.dim is not None
        ]
        return -(max([self.layout.max_plate_nesting, *active]) + 1)

    def _values(self, z: torch.Tensor, particle_dim: int) -> dict[str, torch.Tensor]:
        model_z = self.layout.particles_to_model(z, particle_dim)
        unpacked = self.layout.unpack(model_z, model_shapes=True)
        return {site.name: value for site, value, _ in unpacked}

    def _log_jacobian(self, z: torch.Tensor) -> torch.Tensor:
        return sum(log_jacobian for _, _, log_jacobian in self.layout.unpack(z))

    def _conditioned(self, z: torch.Tensor, likelihood_scale, particle_dim: int, mask=None):
        model = poutine.condition(self.model, data=self._values(z, particle_dim))
        scale = _ScaleAndMaskDataPlate(
            self.data_plate, likelihood_scale, mask, self.layout.tasks_dim
        )

        def scaled_model(*args, **kwargs):
            with pyro.plate(_PARTICLES, z.shape[0], dim=particle_dim), scale:
                return model(*args, **kwargs)

        return scaled_model

    def _trace(
        self, z, args, kwargs, likelihood_scale, particle_dim: int, validate=True, mask=None
    ):
        model = self._conditioned(z, likelihood_scale, particle_dim, mask)
        # invalid parameters (e.g. a scale of exp(-200) = 0) give non-finite values that the
        # refinement's safeguard rejects, rather than an exception mid-step
        with (
            _vectorization_failures(z.shape[0]),
            poutine.block(),
            pyro.validation_enabled(False),
        ):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        with (
            contextlib.nullcontext() if validate else pyro.validation_enabled(False),
            _non_finite_values_handled(),
        ):
            trace.compute_log_prob()
        return trace

    def _enumerated_per_particle(self, z: torch.Tensor, data: TaskData) -> torch.Tensor:
        """``f_B`` per particle and task ``(S, T_flat)`` with enumerated sites summed out.

        The same factors and contraction as ``TraceEnum_ELBO`` with an empty guide, but
        each contracted term keeps its plate dims; the particle and task dims are read
        off by their symbols and every other plate dim is summed (a product of factors).
        """
        particle_dim = self._particle_dim()
        model = EnumMessenger(first_available_dim=particle_dim - 1)(
            self._conditioned(z, data.likelihood_scale, particle_dim, data.mask)
        )
        with (
            _vectorization_failures(z.shape[0]),
            poutine.block(),
            pyro.validation_enabled(False),
        ):
            trace = poutine.trace(model).get_trace(*data.args, **data.kwargs)
        trace = prune_subsample_sites(trace)
        with _non_finite_values_handled():
            trace.compute_log_prob()
        trace.pack_tensors()
        costs, factors, _, sum_dims, scale = _compute_model_factors(trace, poutine.Trace())
        terms = [term for terms in costs.values() for term in terms]
        if factors:
            contracted = contract_tensor_tree(factors, sum_dims)
            terms += [
                packed.scale_and_mask(term, scale=scale)
                for terms_t in contracted.values()
                for term in terms_t
            ]
        dim_to_symbol = {}
        for site in trace.nodes.values():
            if site["type"] == "sample":
                dim_to_symbol.update(site["infer"]["_dim_to_symbol"])
        kept = [dim_to_symbol.get(particle_dim)]
        if self.layout.num_tasks is not None:
            kept.append(dim_to_symbol.get(self.layout.tasks_dim))
        total = self._log_jacobian(z) + z.new_zeros(z.shape[:2])
        for term in terms:
            total = total + _to_particles_and_tasks(term, kept, total.shape)
        return total

    def _per_task(self, log_prob: torch.Tensor, particle_dim: int) -> torch.Tensor:
        """Sum a site's ``log_prob`` (particles at ``particle_dim``) down to ``(S, T_flat)``."""
        if log_prob.dim() < -particle_dim:
            log_prob = log_prob.reshape((1,) * (-particle_dim - log_prob.dim()) + log_prob.shape)
        if self.layout.num_tasks is None:
            return log_prob.reshape(log_prob.shape[0], -1).sum(-1, keepdim=True)
        log_prob = log_prob.movedim(log_prob.dim() + self.layout.tasks_dim, 1)
        log_prob = log_prob.expand(log_prob.shape[0], self.layout.num_tasks, *log_prob.shape[2:])
        return log_prob.reshape(*log_prob.shape[:2], -1).sum(-1)


@contextlib.contextmanager
def _non_finite_values_handled():
    """Silence Pyro's ``Encountered NaN/inf: log_prob_sum`` warnings: a non-finite log
    joint is the refinement's to handle (its safeguard rejects the step, the convergence
    phase and the line searches treat it as ``-inf``), not the user's to read."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"Encountered [-+]?(NaN|inf)", category=UserWarning
        )
        yield


@contextlib.contextmanager
def _vectorization_failures(num_particles: int):
    """Re-raise a failure of the model's tensor code under the particle plate as a
    ``ValueError`` saying how to vectorize the model (a ``LinAlgError`` of the model's own
    linear algebra passes through: :func:`~iai_prob.inference.fit` skips that step)."""
    try:
        yield
    except torch.linalg.LinAlgError:
        raise
    except (RuntimeError, TypeError, IndexError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        raise ValueError(
            f"the model failed when run at {num_particles} draws of its latents at once "
            f"({type(error).__name__}: {first_line}). The guide runs it vectorized, each "
            "latent's value with leading batch dims left of the model's plates (as Pyro's "
            "vectorized ELBOs do); write it so that they broadcast, e.g. (x * w).sum(-1) "
            "instead of x @ w"
        ) from error


def _to_particles_and_tasks(term: torch.Tensor, kept: list, shape: torch.Size) -> torch.Tensor:
    """A packed term (``term._pyro_dims`` names its axes) summed over every axis but the
    particle and task symbols ``kept``, arranged and broadcast to ``shape = (S, T_flat)``.

    A term without a task axis does not vary over tasks (e.g. a site outside the tasks
    plate), so every task gets it, as when the tasks are evaluated one at a time.
    """
    if not isinstance(term, torch.Tensor):  # a constant (e.g. an identically zero factor)
        return torch.as_tensor(term).expand(shape)
    dims = getattr(term, "_pyro_dims", "")
    summed = [axis for axis, symbol in enumerate(dims) if symbol not in kept]
    if summed:
        term = term.sum(summed)
    remaining = [symbol for symbol in dims if symbol in kept]
    order = [remaining.index(symbol) for symbol in kept if symbol in remaining]
    term = term.permute(order) if order else term
    view = [1] * len(shape)
    for axis, symbol in enumerate(kept):
        if symbol in remaining:
            view[axis] = shape[axis]
    return term.reshape(view).expand(shape)


class BoundLogJoint:
    """A :class:`LogJoint` bound to one mini-batch, read by solver steps: ``f_B`` and its
    gradient at particles ``(S, T_flat, D)`` (``batch`` is ignored)."""

    def __init__(self, log_joint: LogJoint, data: TaskData):
        self.log_joint = log_joint
        self.data = data

    def per_particle(self, z: torch.Tensor, batch=None) -> torch.Tensor:
        return self.log_joint.per_particle(z, self.data)

    def value_and_grad(self, z: torch.Tensor, batch=None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.log_joint.value_and_grad(z, self.data)
