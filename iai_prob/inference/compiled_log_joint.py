"""A traced log joint's evaluations, compiled by TorchInductor once it is replayed often.

The traced graph (:mod:`~iai_prob.inference.traced_log_joint`) takes Pyro off the hot
path, but every replayed ATen operation still costs microseconds of dispatch, and a
gradient adds a pass of the autograd engine: on a small dataset that overhead, not the
arithmetic, is the cost of a posterior. A graph replayed :data:`COMPILE_AFTER` times is
therefore compiled by TorchInductor (fused C++ kernels on the CPU, Triton kernels on
CUDA) into the evaluations the solvers need,

    value(z, s, a…)            = g(z, s, a…)                       (S, T)
    value_and_grad(z, s, a…)   = (g, ∇_z Σ_{s,t} g)                 (S, T), (S, T, D)
    solve(step, state, s, a…)  = a whole solver step on g: the sigma-point CVI target
                                 (:func:`~iai_prob.inference.signals.sigma_point_target`),
                                 a damped-Newton iteration with its line search
                                 (:func:`~iai_prob.inference.laplace.newton_step`), a
                                 backtracked convergence-phase step
                                 (:func:`~iai_prob.inference.convergence.cvi_step`)

(particles and tasks are independent, so the gradient of the sum is every particle's and
task's own gradient). Each is a function that ``make_fx`` records around the graph (the
gradient through ``torch.func.grad_and_value``; a solver step evaluates ``g`` at any
number of particles, the signature's own count at a time): a compiled kernel runs no
autograd at call time, and nothing differentiates a compiled graph twice (which
compiled graphs do not support; the solvers' curvature comes from gradients). A solver
step is one kernel call instead of dozens of evaluations and the small tensor
operations between them, whose dispatch is the cost of a posterior on a small
dataset. The recorded graph goes to
Inductor's graph compiler directly (``torch._inductor.compile_fx.compile_fx``, the
backend behind ``torch.compile``): the signature already fixes every shape, dtype and
device, so no Dynamo frame or guard is needed. Only evaluations under
``torch.no_grad()`` (every posterior, refinement and convergence phase) count towards the
threshold and use the kernels; training, whose ``N`` is drawn anew at every step,
replays.

Measured on the real-model suite (one thread): the value of the diabetes regression
(N = 442, one point) 460 µs replayed against 17 µs compiled, and 94 µs through
``torch.compile``'s Dynamo frame; value and gradient of the Student-t regression (N = 21,
12 sigma points) 1.5 ms (replay and autograd) against 0.13 ms; a damped-Newton iteration
of a 20-row Grunfeld regression (the curvature and 33 step lengths) 0.4 ms as one
kernel against 1.5 ms as separately compiled evaluations and the glue between them;
compiling a shape's kernels (``guide.precompile``) costs 18–53 s on the real-model
suite, less once TorchInductor's on-disk cache holds them. Hence the threshold: a
signature met in one or two posteriors is never compiled, one met in every posterior of
a benchmark or a large file is, as NumPyro compiles a ``jit``-ted solver once per shape.

Every kernel is checked at its first call against the replay (values and gradients equal
within ``√eps`` of the dtype, relative to their largest entry; a solver step's outputs,
which pass through linear solves, within ``eps^{1/3}``) and timed against it (the
best of three calls each): Inductor's code is not faster everywhere (a ``k̂`` over 1,000
draws of a Poisson regression on N = 2,000 ran 71 ms compiled, 26 ms replayed, while
Inductor fused the data's own ``lgamma(y + 1)`` back into the particle loop; with that
work in the prelude, 9.6 ms compiled against 13.0 ms replayed, one thread). A
compile or a check that fails (no C++ compiler, an operation Inductor does not
support), or a kernel slower than the replay, leaves the signature on the replay for
good, with a debug log. ``IAI_COMPILE_LOG_JOINT=0`` (or
``false``/``off``/``no``) turns compiling off, read at every call; a compiled kernel
agrees with the replay to floating-point rounding, not bit for bit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import warnings

import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = [
    "COMPILE_AFTER",
    "COMPILE_AFTER_TERMS",
    "ENV_VAR",
    "CompiledLogJoint",
    "agrees",
    "compile_checked",
    "compiles_now",
    "compiling_enabled",
    "compiling_now",
    "kind_name",
    "replayed_value_and_grad",
]

ENV_VAR = "IAI_COMPILE_LOG_JOINT"
"""Set to ``0`` (or ``false``/``off``/``no``) to replay traced graphs without compiling."""

COMPILE_AFTER = 512
"""Replays of a traced signature (under ``torch.no_grad()``) before its kernels are
compiled. A posterior at the defaults evaluates each of its three or four signatures (one
point, the sigma points, the ``k̂`` draws) 10–60 times (up to a few hundred when the
phase runs to its cap), so compiling starts within the tenth to twentieth posterior of
one shape and a single posterior does not wait for the compiler."""

COMPILE_AFTER_TERMS = 1 << 30
"""Likelihood terms (particles × tasks × points) a signature's replays evaluate before
its kernels are compiled, whatever the number of calls: compiling a signature costs
seconds to tens of seconds, about what replaying 2³⁰ terms costs (10–20 ns a term), so
a stream of large batches of one shape compiles once the replay has spent that much."""

_LOG = logging.getLogger(__name__)
_FAILED = object()
_now = threading.local()


def compiling_enabled() -> bool:
    """Whether the environment allows compiling (``IAI_COMPILE_LOG_JOINT`` is not ``0``)."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "off", "no")


@contextlib.contextmanager
def compiling_now():
    """Within this block (in this thread), every signature is traced and compiled at its
    first evaluation instead of after :data:`TRACE_AFTER
    <iai_prob.inference.traced_log_joint.TRACE_AFTER>` calls and :data:`COMPILE_AFTER`
    replays (``guide.precompile`` uses it); ``IAI_COMPILE_LOG_JOINT=0`` still wins."""
    previous = compiles_now()
    _now.active = True
    try:
        yield
    finally:
        _now.active = previous


def compiles_now() -> bool:
    """Whether this thread is inside :func:`compiling_now`."""
    return getattr(_now, "active", False)


class CompiledLogJoint:
    """The evaluations of one traced signature's graph ``g(z, s, a…) → (S, T)``: replayed
    until :data:`COMPILE_AFTER` calls or :data:`COMPILE_AFTER_TERMS` likelihood terms
    (``terms_per_call`` a call), compiled afterwards (see the module docstring).

    ``graph`` replays the eager computation exactly (training differentiates it);
    ``fast`` is its copy with the work per point moved out of the particle broadcast
    (:func:`~iai_prob.inference.traced_log_joint._rewritten`), which inference replays
    and compiles, and ``split`` the ``(prelude, body)`` of ``fast``
    (:func:`~iai_prob.inference.traced_log_joint.split_per_dataset_work`): inference runs
    the prelude once per dataset and replays or compiles the body on its results."""

    def __init__(
        self,
        graph: torch.fx.GraphModule,
        fast: torch.fx.GraphModule | None = None,
        num_particles: int | None = None,
        split: tuple[torch.fx.GraphModule, torch.fx.GraphModule] | None = None,
        terms_per_call: int = 0,
    ):
        self.graph = graph
        self.fast = graph if fast is None else fast
        self.prelude, self.body = (None, self.fast) if split is None else split
        self.num_particles = num_particles
        self.calls = 0
        self.terms = 0
        self.terms_per_call = terms_per_call
        self._kernels: dict[object, object] = {}
        self._lock = threading.Lock()
        self._last_dataset: tuple = ((), ())

    def value(self, z: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """``g(z, …)``; differentiable through the replay when gradients are enabled."""
        if torch.is_grad_enabled():
            return self.graph(z, *inputs)
        return self._body_value(z, *self._with_prelude(inputs))

    def value_and_grad(
        self, z: torch.Tensor, *inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g, ∇_z Σ g)`` at ``z``, detached."""
        z = z.detach()
        if torch.is_grad_enabled():
            return replayed_value_and_grad(self.graph, z, inputs)
        return self._body_value_and_grad(z, *self._with_prelude(inputs))

    def solve(self, function, state: tuple, inputs: tuple, options: tuple = ()):
        """``function(log_joint, *state, *options, traceable=…)``, a solver step (a pytree
        of tensors) on this signature's log joint with its data ``inputs`` bound
        (:class:`_Bound`), as one kernel once compiled: e.g. the sigma-point CVI target, a
        damped-Newton iteration with its whole line search. ``state`` are tensors;
        ``options`` are the step's constants (numbers, a Gaussian family), part of the
        kernel's key. The step must be free of Python branches on values when
        ``traceable`` is true (it is then recorded by ``make_fx``)."""
        if torch.is_grad_enabled():
            bound = _Bound(self.value, self.value_and_grad, inputs, self.num_particles)
            return function(bound, *state, *options, traceable=False)
        inputs = self._with_prelude(inputs)
        kind = (function, *options)  # a family is equal to another by value
        # a solver step's outputs pass through linear solves, whose conditioning amplifies
        # rounding (a Newton step in raw units): checked within eps^(1/3), not √eps
        kernel = self._kernel(
            kind,
            lambda: _step_of(self.body, self.num_particles, function, len(state), options),
            (*state, *inputs),
            exponent=1 / 3,
        )
        if kernel is not None:
            return kernel(*state, *inputs)
        bound = _Bound(self._body_value, self._body_value_and_grad, inputs, self.num_particles)
        return function(bound, *state, *options, traceable=False)

    # ----------------------------------------------------------------- helpers
    def _with_prelude(self, inputs: tuple) -> tuple:
        """``inputs`` followed by the prelude's results on them, computed once per dataset:
        the last inputs' are kept, recognised by identity and version (an in-place change
        of a data tensor computes them anew)."""
        if self.prelude is None:
            return inputs
        key = tuple((id(tensor), tensor._version) for tensor in inputs)
        last_key, extended = self._last_dataset
        if key != last_key:
            extended = (*inputs, *self.prelude(*inputs))
            self._last_dataset = (key, extended)  # holds the inputs: their ids stay theirs
        return extended

    def _body_value(self, z: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """The body's value at ``z`` with the prelude's results in ``inputs``."""
        kernel = self._kernel("value", lambda: self.body, (z, *inputs))
        return (self.body if kernel is None else kernel)(z, *inputs)

    def _body_value_and_grad(self, z: torch.Tensor, *inputs: torch.Tensor):
        """The body's value and gradient at ``z`` with the prelude's results in ``inputs``."""
        kernel = self._kernel("value_and_grad", lambda: _value_and_grad_of(self.body), (z, *inputs))
        if kernel is not None:
            return kernel(z, *inputs)
        return replayed_value_and_grad(self.body, z, inputs)

    def _kernel(self, kind, make_function, args: tuple, exponent: float = 0.5):
        """The compiled kernel of ``kind`` (``make_function()`` traced at ``args``, checked
        within ``eps^exponent``; built only to compile), compiling it at the threshold;
        ``None`` while the replay must run (gradients enabled, below the threshold,
        compiling off, or it failed). Only inference (``torch.no_grad()``) counts and
        compiles: training draws a new ``N`` at every step, and compiling its many
        signatures would cost more than it saves."""
        if torch.is_grad_enabled():
            return None
        self.calls += 1
        self.terms += self.terms_per_call
        kernel = self._kernels.get(kind)
        if kernel is _FAILED or not compiling_enabled():
            return None
        if kernel is None:
            below = self.calls < COMPILE_AFTER and self.terms < COMPILE_AFTER_TERMS
            if below and not compiles_now():
                return None
            with self._lock:
                kernel = self._kernels.get(kind)
                if kernel is None:
                    function = make_function()
                    kernel = compile_checked("log joint", kind, function, args, exponent)
                    kernel = self._kernels[kind] = _FAILED if kernel is None else kernel
            if kernel is _FAILED:
                return None
        return kernel


class _Bound:
    """A signature's log joint with its data inputs bound, read by a solver step like a
    :class:`~iai_prob.inference.log_joint.LogJoint` bound to its data: ``value_and_grad``
    at the signature's own particles, ``per_particle`` at any number of them (evaluated
    ``num_particles`` at a time, the last group padded with copies of the first particle)."""

    def __init__(self, value, value_and_grad, inputs: tuple, num_particles: int | None):
        self._value = value
        self._value_and_grad = value_and_grad
        self.inputs = inputs
        self.num_particles = num_particles

    def value_and_grad(self, z: torch.Tensor, batch=None):
        return self._value_and_grad(z, *self.inputs)

    def per_particle(self, z: torch.Tensor, batch=None) -> torch.Tensor:
        size = self.num_particles or z.shape[0]
        count = z.shape[0]
        padding = -count % size
        if padding:
            z = torch.cat([z, z[:1].expand(padding, *z.shape[1:])])
        values = [self._value(group, *self.inputs) for group in z.split(size)]
        return torch.cat(values)[:count]


def compile_checked(what: str, kind, function, args: tuple, exponent: float = 0.5):
    """``function`` (of tensors, returning a pytree of tensors) traced at ``args`` and
    compiled by TorchInductor, checked against ``function`` run eagerly at ``args``
    (within ``eps^exponent``, see :func:`agrees`) and timed against it; ``None`` where
    anything goes wrong or it is not faster (``what`` and ``kind`` name it in the log)."""
    args = tuple(arg.detach() for arg in args)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch's own, on import
            warnings.simplefilter("ignore", FutureWarning)  # and in its lowerings
            from torch._inductor.compile_fx import compile_fx

            expected, spec = tree_flatten(function(*args))
            graph = make_fx(lambda *tensors: tree_flatten(function(*tensors))[0])(*args)
            kernel = _Kernel(compile_fx(graph, list(args)), spec)
            got, _ = tree_flatten(kernel(*args))
    except Exception as error:  # no compiler, an unsupported op: the replay stays
        _LOG.debug("compiling the %s's %s failed (%s); replaying it", what, kind, error)
        return None
    if not all(agrees(a, b, exponent) for a, b in zip(got, expected, strict=True)):
        _LOG.debug("the compiled %s's %s differs from the replay; replaying it", what, kind)
        return None
    with torch.no_grad():
        compiled_seconds, replay_seconds = _seconds(kernel, args), _seconds(function, args)
    if compiled_seconds >= replay_seconds:
        _LOG.debug(
            "the compiled %s's %s is not faster than the replay (%.3g s against "
            "%.3g s); replaying it",
            what,
            kind,
            compiled_seconds,
            replay_seconds,
        )
        return None
    _LOG.info(
        "compiled the %s's %s at inputs of shapes %s in %.1f s",
        what,
        kind_name(kind),
        [tuple(arg.shape) for arg in args[:2]],
        time.perf_counter() - started,
    )
    return kernel


def kind_name(kind) -> str:
    """A kernel's kind by name: ``"value"``, ``"value_and_grad"`` or a solver step's name."""
    return kind if isinstance(kind, str) else getattr(kind[0], "__name__", str(kind[0]))


def _seconds(function, args: tuple, repeats: int = 3) -> float:
    """The fastest of ``repeats`` timed calls."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function(*args)
        best = min(best, time.perf_counter() - started)
    return best


class _Kernel:
    """A compiled graph returning its function's pytree (a tensor, a tuple, a NamedTuple)."""

    def __init__(self, compiled, spec):
        self._compiled = compiled
        self._spec = spec

    def __call__(self, *args):
        return tree_unflatten(list(self._compiled(*args)), self._spec)


def _step_of(graph, num_particles, function, num_state: int, options: tuple):
    """``(*state, *inputs) ↦ function(bound graph, *state, *options)``, traceable."""

    def step(*tensors):
        inputs = tensors[num_state:]
        bound = _Bound(graph, _value_and_grad_of(graph), inputs, num_particles)
        return function(bound, *tensors[:num_state], *options, traceable=True)

    return step


def _value_and_grad_of(graph):
    """``(z, *inputs) ↦ (g, ∇_z Σ g)`` as a ``torch.func`` transform of ``graph``."""

    def total_and_value(z, *inputs):
        value = graph(z, *inputs)
        return value.sum(), value

    def value_and_grad(z, *inputs):
        grad, (_, value) = torch.func.grad_and_value(total_and_value, has_aux=True)(z, *inputs)
        return value, grad

    return value_and_grad


def replayed_value_and_grad(graph, z, inputs=()):
    """``(g, ∇_z Σ g)`` by running ``graph(z, *inputs)`` (a replay, or any function of
    ``z``) under autograd, detached."""
    with torch.enable_grad():
        point = z.detach().requires_grad_(True)
        value = graph(point, *inputs)
        (grad,) = torch.autograd.grad(value.sum(), point, allow_unused=True)
    return value.detach(), torch.zeros_like(point) if grad is None else grad


def agrees(got: torch.Tensor, expected: torch.Tensor, exponent: float = 0.5) -> bool:
    """Equal non-finite entries, finite ones within ``eps^exponent`` (``√eps`` by default)
    of the largest magnitude (integer and boolean entries: equal)."""
    if not expected.is_floating_point():
        return torch.equal(got, expected)
    finite = torch.isfinite(expected)
    if not torch.equal(finite, torch.isfinite(got)):
        return False
    if not torch.equal(torch.nan_to_num(got[~finite]), torch.nan_to_num(expected[~finite])):
        return False
    if not bool(finite.any()):
        return True
    tolerance = torch.finfo(expected.dtype).eps ** exponent
    scale = expected[finite].abs().max().clamp_min(1.0)
    return bool(((got[finite] - expected[finite]).abs() <= tolerance * scale).all())
