"""NUTS references for one dataset: Pyro's NUTS on the Pyro model, or a jitted NumPyro NUTS.

The No-U-Turn Sampler (Hoffman and Gelman 2014) gives asymptotically exact posterior
draws for non-conjugate models, at seconds per dataset where the amortized guide takes
milliseconds; the diagnostics compare the two (:func:`~iai_prob.diagnostics.compare_with_nuts`).

* :func:`pyro_nuts` runs ``pyro.infer.NUTS`` on the Pyro model itself (no second model to
  write; about 40 iterations per second on one CPU core for small regressions).
* :class:`NutsReference` runs NumPyro's NUTS on a NumPyro twin of the model, compiled once
  per data shape with warmup and sampling in one ``lax.scan``, so that a dataset costs
  only its sampling time (tens of milliseconds); the benchmarks use it on many tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["NutsReference", "pyro_nuts"]


def pyro_nuts(
    model,
    *args,
    num_warmup: int = 500,
    num_samples: int = 1000,
    seed: int = 0,
    progress: bool = False,
    **kwargs,
) -> tuple[dict[str, np.ndarray], float]:
    """Single-chain Pyro NUTS on ``model(*args, **kwargs)``: draws ``{site: (S, …)}`` and seconds.

    :param model: a Pyro model (or a task family) for one dataset.
    :param int num_warmup: adaptation steps (step size and diagonal mass matrix).
    :param int num_samples: kept draws.
    :param bool progress: show Pyro's progress bar.
    """
    import pyro
    from pyro.infer import MCMC, NUTS

    for name, value in (("num_warmup", num_warmup), ("num_samples", num_samples)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    model = getattr(model, "model", model)
    with torch.random.fork_rng(devices=[]):
        pyro.set_rng_seed(seed)
        started = time.perf_counter()
        mcmc = MCMC(
            NUTS(model),
            num_samples=int(num_samples),
            warmup_steps=int(num_warmup),
            disable_progbar=not progress,
        )
        mcmc.run(*args, **kwargs)
        seconds = time.perf_counter() - started
    return {k: v.detach().cpu().numpy() for k, v in mcmc.get_samples().items()}, seconds


class NutsReference:
    """Single-chain NumPyro NUTS, jitted once per data shape and reused across tasks.

    ``MCMC.run`` rebuilds and recompiles its sampling loop on every call (several seconds
    each); here one jitted function runs warmup and sampling with ``lax.scan`` for a task's
    data, so a task costs only its sampling time. Initial values are uniform on
    ``(-2, 2)`` in unconstrained space, as NumPyro's default ``init_to_uniform``.

    :param model: a NumPyro model taking the task's data as positional arguments.
    :param int num_warmup: adaptation steps (step size and diagonal mass matrix).
    :param int num_samples: kept draws.
    """

    def __init__(self, model: Callable, num_warmup: int, num_samples: int):
        self.model = model
        self.num_warmup = num_warmup
        self.num_samples = num_samples
        self._compiled: dict = {}
        self.compile_seconds = 0.0

    def _chain(self, key, template, *args):
        import jax
        from numpyro.infer.hmc import hmc
        from numpyro.infer.util import constrain_fn, potential_energy

        init_key, run_key = jax.random.split(key)
        keys = jax.random.split(init_key, len(template))
        init = {
            name: jax.random.uniform(k, value.shape, minval=-2.0, maxval=2.0)
            for k, (name, value) in zip(keys, sorted(template.items()), strict=True)
        }
        init_kernel, sample_kernel = hmc(
            potential_fn=lambda z: potential_energy(self.model, args, {}, z), algo="NUTS"
        )
        state = init_kernel(init, num_warmup=self.num_warmup, rng_key=run_key)

        def advance(current, _):
            following = sample_kernel(current)
            return following, (following.z, following.num_steps)

        state, _ = jax.lax.scan(advance, state, None, length=self.num_warmup)
        _, (draws, steps) = jax.lax.scan(advance, state, None, length=self.num_samples)
        constrained = jax.vmap(lambda z: constrain_fn(self.model, args, {}, z))(draws)
        return constrained, steps

    def _compiled_chain(self, key, args):
        import jax
        from numpyro.infer.util import initialize_model

        shapes = tuple(tuple(a.shape) for a in args)
        if shapes not in self._compiled:
            started = time.perf_counter()
            info = initialize_model(jax.random.PRNGKey(0), self.model, model_args=args)[0]
            template = info.z
            chain = jax.jit(lambda key, *data: self._chain(key, template, *data))
            self._compiled[shapes] = chain.lower(key, *args).compile()
            self.compile_seconds += time.perf_counter() - started
        return self._compiled[shapes]

    def run(self, seed: int, *args: np.ndarray) -> tuple[dict[str, np.ndarray], float, float]:
        """Draws ``{site: (num_samples, ...)}``, seconds taken and mean leapfrog steps.

        The first call for a data shape also compiles; that time goes to
        :attr:`compile_seconds`, not to the returned seconds.
        """
        import jax

        args = tuple(jax.numpy.asarray(a) for a in args)
        key = jax.random.PRNGKey(seed)
        chain = self._compiled_chain(key, args)
        started = time.perf_counter()
        draws, steps = jax.block_until_ready(chain(key, *args))
        seconds = time.perf_counter() - started
        return {k: np.asarray(v) for k, v in draws.items()}, seconds, float(steps.mean())
