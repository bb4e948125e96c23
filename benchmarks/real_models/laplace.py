"""The Laplace baseline: a compiled damped Newton on the unconstrained log joint.

What a statistician would reach for first (DESIGN.md, "Where the field stands"): the mode
``z*`` of the log joint ``log p(z, D)`` in NumPyro's unconstrained space (log-Jacobians
included, so it is the mode of the density that NUTS samples) by Newton's method with the
exact Hessian, then ``q = N(z*, H(z*)⁻¹)``. Each step solves ``H d = −g`` with the
Hessian's eigenvalues floored at ``1e-8 · max(1, |λ|_max)`` (a modified Newton step that is
always a descent direction, Nocedal and Wright 2006, §3.4) and halves the step until the
Armijo condition holds; it stops when the decrease of ``−log p`` falls below ``1e-10``
relative (or after ``max_iterations``). The whole loop is one ``jax.jit``-compiled
``lax.while_loop``, compiled once per data shape; :meth:`LaplaceBaseline.run` times only
the compiled call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = ["LaplaceBaseline", "LaplaceResult"]


class LaplaceResult(NamedTuple):
    """The mode, the Hessian's eigenpairs there, Newton iterations, and seconds taken."""

    mode: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    iterations: int
    seconds: float
    unravel: Callable


def _floored_eigh(hessian):
    import jax.numpy as jnp

    values, vectors = jnp.linalg.eigh(hessian)
    floor = 1e-8 * jnp.maximum(1.0, jnp.abs(values).max())
    return jnp.maximum(values, floor), vectors


def _newton(potential, start, max_iterations: int, max_halvings: int = 40):
    import jax
    import jax.numpy as jnp

    value_and_grad = jax.value_and_grad(potential)
    hessian = jax.hessian(potential)

    def step(carry):
        z, value, iteration, _ = carry
        _, gradient = value_and_grad(z)
        values, vectors = _floored_eigh(hessian(z))
        direction = -vectors @ ((vectors.T @ gradient) / values)
        slope = gradient @ direction

        def shorter(search):
            size, _, halvings = search
            return size / 2, potential(z + size / 2 * direction), halvings + 1

        def too_long(search):
            size, trial, halvings = search
            armijo = trial <= value + 1e-4 * size * slope
            return ~(armijo & jnp.isfinite(trial)) & (halvings < max_halvings)

        size, trial, _ = jax.lax.while_loop(
            too_long, shorter, (jnp.ones(()), potential(z + direction), 0)
        )
        accepted = jnp.isfinite(trial) & (trial <= value)
        new_z = jnp.where(accepted, z + size * direction, z)
        new_value = jnp.where(accepted, trial, value)
        done = (value - new_value) <= 1e-10 * (1.0 + jnp.abs(value))
        return new_z, new_value, iteration + 1, done

    def going(carry):
        _, _, iteration, done = carry
        return ~done & (iteration < max_iterations)

    z, _, iterations, _ = jax.lax.while_loop(going, step, (start, potential(start), 0, False))
    values, vectors = _floored_eigh(hessian(z))
    return z, values, vectors, iterations


class LaplaceBaseline:
    """``N(z*, H⁻¹)`` for a NumPyro model, by a damped Newton compiled once per data shape.

    :param model: a NumPyro model taking one dataset's arrays as positional arguments.
    :param int max_iterations: Newton steps at most.
    """

    def __init__(self, model: Callable, max_iterations: int = 100):
        self.model = model
        self.max_iterations = max_iterations
        self._compiled: dict = {}
        self.compile_seconds = 0.0

    def _compile(self, args):
        import jax
        from jax.flatten_util import ravel_pytree
        from numpyro.infer.util import initialize_model, potential_energy

        shapes = tuple(tuple(a.shape) for a in args)
        if shapes not in self._compiled:
            started = time.perf_counter()
            template = initialize_model(jax.random.PRNGKey(0), self.model, model_args=args)[0].z
            flat, unravel = ravel_pytree(template)

            def solve(*data):
                def potential(z):
                    return potential_energy(self.model, data, {}, unravel(z))

                return _newton(potential, jax.numpy.zeros_like(flat), self.max_iterations)

            compiled = jax.jit(solve).lower(*args).compile()
            self._compiled[shapes] = (compiled, unravel)
            self.compile_seconds += time.perf_counter() - started
        return self._compiled[shapes]

    def run(self, *args: np.ndarray) -> LaplaceResult:
        """The Laplace approximation for one dataset; compiles on a new data shape (that
        time goes to :attr:`compile_seconds`, not to the result's seconds)."""
        import jax

        args = tuple(jax.numpy.asarray(a) for a in args)
        compiled, unravel = self._compile(args)
        started = time.perf_counter()
        mode, values, vectors, iterations = jax.block_until_ready(compiled(*args))
        seconds = time.perf_counter() - started
        return LaplaceResult(
            np.asarray(mode),
            np.asarray(values),
            np.asarray(vectors),
            int(iterations),
            seconds,
            unravel,
        )

    def draws(self, result: LaplaceResult, num_draws: int, seed: int, *args):
        """``num_draws`` seeded draws of ``N(z*, H⁻¹)``, constrained: ``{site: (S, …)}``."""
        import jax
        from numpyro.infer.util import constrain_fn

        noise = np.random.default_rng(seed).standard_normal((num_draws, len(result.mode)))
        flat = result.mode + (noise / np.sqrt(result.eigenvalues)) @ result.eigenvectors.T
        args = tuple(jax.numpy.asarray(a) for a in args)
        constrain = jax.vmap(lambda z: constrain_fn(self.model, args, {}, result.unravel(z)))
        return {k: np.asarray(v) for k, v in constrain(jax.numpy.asarray(flat)).items()}
