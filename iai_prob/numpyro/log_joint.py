"""The model's log joint in unconstrained space, on a mini-batch, in JAX.

The twin of :mod:`iai_prob.inference.log_joint`: for a mini-batch ``B`` of a dataset of
size ``N``

    f_B(z) = log p(T(z)) + log |det ∂T/∂z| + (N/|B|) Σ_{n∈B} log p(y_n | x_n, T(z)),

an unbiased estimate of ``log p(z, D)`` (Hoffman et al. 2013). The NumPyro model runs on
one task with the globals conditioned on ``T(z)``; particles and tasks are vectorized
with ``jax.vmap``. Padded points are masked out of the observed sites (an enumerated
discrete local then sums its normalized probabilities to one, adding nothing). Models
with enumerated discrete locals are marginalized with funsor, and, as Pyro's
``TraceEnum_ELBO`` does, the subsampling scale ``N/|B|`` multiplies the marginalized
data term rather than each factor inside the sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro import handlers
from numpyro.primitives import Messenger

from iai_prob.latent_layout import LatentLayout
from iai_prob.numpyro.task_data import TaskData
from iai_prob.numpyro.xla_guard import check_fused_reductions

__all__ = ["LogJoint"]


def _in_plate(site, plate: str) -> bool:
    return any(frame.name == plate for frame in site["cond_indep_stack"])


class _MaskObserved(Messenger):
    """Mask the observed sites inside the data plate with ``mask`` (padding → 0)."""

    def __init__(self, plate: str, mask):
        super().__init__()
        self.plate = plate
        self.mask = mask

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"] and _in_plate(msg, self.plate):
            msg["fn"] = msg["fn"].mask(self.mask)


class LogJoint:
    """``f_B(z)`` for a NumPyro model, one task and one particle at a time.

    :param model: the NumPyro model.
    :param LatentLayout layout: where the globals sit in ``z``.
    :param str data_plate: name of the data plate.
    :param bool enumerate: marginalize enumerated discrete local sites (needs funsor).
    """

    def __init__(self, model, layout: LatentLayout, data_plate: str, enumerate: bool):
        self.model = model
        self.layout = layout
        self.data_plate = data_plate
        self.enumerate = enumerate
        # every refinement and training step evaluates f_B through this class: refuse to
        # build it where XLA is known to miscompile its reduction (once per process)
        check_fused_reductions()

    def _key(self):
        return (self.model, self.layout, self.data_plate, self.enumerate)

    def __eq__(self, other):
        return isinstance(other, LogJoint) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def single(self, z, args, kwargs, mask, scale):
        """``f_B`` at ``z`` ``(D,)`` for one task's ``args``; padded points are masked."""
        values, log_jacobian = {}, 0.0
        for site, value, site_log_jacobian in self.layout.unpack(z):
            values[site.name] = value
            log_jacobian = log_jacobian + site_log_jacobian
        model = handlers.condition(self.model, data=values)
        with handlers.block(), _MaskObserved(self.data_plate, mask):
            if self.enumerate:
                from numpyro.contrib.funsor import enum, log_density

                first = -(self.layout.max_plate_nesting + 1)
                total, trace = log_density(enum(model, first), args, kwargs, {})
                prior = self._prior(trace)
                data_term = total - prior
            else:
                trace = handlers.trace(handlers.seed(model, rng_seed=0)).get_trace(*args, **kwargs)
                prior = self._prior(trace)
                data_term = sum(
                    self._site_log_prob(site)
                    for site in trace.values()
                    if site["type"] == "sample" and _in_plate(site, self.data_plate)
                )
        return prior + scale * data_term + log_jacobian

    def _prior(self, trace):
        return sum(
            self._site_log_prob(site)
            for site in trace.values()
            if site["type"] == "sample" and not _in_plate(site, self.data_plate)
        )

    @staticmethod
    def _site_log_prob(site):
        log_prob = site["fn"].log_prob(site["value"])
        if site.get("scale") is not None:
            log_prob = site["scale"] * log_prob
        return jnp.sum(log_prob)

    def _vectorized(self, fn, z, data: TaskData):
        """Apply ``fn(z_single, args, kwargs, mask, scale)`` over ``(S, T, D)`` particles
        (each task its own mask in a padded batch)."""
        mask = data.point_mask
        per_task = 0 if mask.ndim == 2 else None
        over_tasks = jax.vmap(fn, in_axes=(0, *data.in_axes(), per_task, None))
        over_particles = jax.vmap(over_tasks, in_axes=(0, None, None, None, None))
        return over_particles(z, data.args, data.kwargs, mask, data.likelihood_scale)

    def per_particle(self, z, data: TaskData):
        """``f_B`` at particles ``z`` ``(S, T, D)``; returns ``(S, T)``."""
        return self._vectorized(self.single, z, data)

    def per_task_mean(self, z, data: TaskData):
        """``f_B`` averaged over the particles, per task ``(T,)``."""
        return self.per_particle(z, data).mean(0)

    def value_and_grad(self, z, data: TaskData):
        """``(f_B, ∇f_B)`` at particles ``z`` ``(S, T, D)``: ``(S, T)`` and ``(S, T, D)``."""
        return self._vectorized(jax.value_and_grad(self.single), z, data)

    def hessian(self, z, data: TaskData):
        """``∇²f_B`` at particles ``z`` ``(S, T, D)``: ``(S, T, D, D)``."""
        return self._vectorized(jax.hessian(self.single), z, data)

    def total(self, z, data: TaskData):
        """``Σ_{particles, tasks} f_B(z)`` (for Monte Carlo ELBOs)."""
        return self.per_particle(z, data).sum()
