"""A network's forward at inference, compiled by TorchInductor per input signature.

The set encoder that gives ``λ_0`` (:mod:`~iai_prob.inference.encoders`: two induced
set-attention blocks and an attention pooling) is a few dozen small ATen operations on a
context of at most ``context_size`` points. On one dataset their dispatch, not their
arithmetic, is the cost (2.5–3.8 ms of a posterior on the real-model suite), as it was
for the log joint (:mod:`~iai_prob.inference.compiled_log_joint`). So the same rule
compiles it: under ``torch.no_grad()``, a forward met
:data:`~iai_prob.inference.compiled_log_joint.COMPILE_AFTER` times with the same input
signature (or once inside :func:`~iai_prob.inference.compiled_log_joint.compiling_now`,
as ``guide.precompile`` runs) becomes one TorchInductor kernel, checked against the
eager forward and kept only where it is faster
(:func:`~iai_prob.inference.compiled_log_joint.compile_checked`).

The module's parameters and buffers are inputs of the kernel, not constants
(``torch.func.functional_call``), so trained, resumed or loaded weights are read at every
call; a non-tensor argument (the count ``N`` of the encoder) is part of the signature.
Training (gradients on) and ``IAI_COMPILE_LOG_JOINT=0`` run the module eagerly. The
kernels are held beside the module (by a weak reference), never in it, so copying or
saving a module copies no compiled code.
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch import nn

from iai_prob.inference import compiled_log_joint
from iai_prob.inference.compiled_log_joint import (
    compile_checked,
    compiles_now,
    compiling_enabled,
)

__all__ = ["compiled_forward"]

_FAILED = object()
_lock = threading.Lock()
_kernels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module → {key: kernel}
_calls: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module → {key: count}


def compiled_forward(module: nn.Module, *args):
    """``module(*args)``: eagerly with gradients enabled or below the threshold, else by
    this signature's compiled kernel (see the module docstring)."""
    if torch.is_grad_enabled() or not compiling_enabled():
        return module(*args)
    state = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    tensors = [arg for arg in args if isinstance(arg, torch.Tensor)]
    key = (
        tuple(_signature(tensor) for tensor in (*tensors, *state.values())),
        tuple(arg if not isinstance(arg, torch.Tensor) else None for arg in args),
    )
    with _lock:
        kernels = _kernels.setdefault(module, {})
        kernel = kernels.get(key)
        if kernel is None:
            calls = _calls.setdefault(module, {})
            calls[key] = calls.get(key, 0) + 1
            if calls[key] < compiled_log_joint.COMPILE_AFTER and not compiles_now():
                return module(*args)
            names = tuple(state)
            function = _pure(module, names, args)
            compiled = compile_checked(  # a deep composition: eps^(1/3), as a solver step
                "network", type(module).__name__, function, (*state.values(), *tensors), 1 / 3
            )
            kernel = kernels[key] = _FAILED if compiled is None else compiled
    if kernel is _FAILED:
        return module(*args)
    return kernel(*state.values(), *tensors)


def _pure(module: nn.Module, names: tuple, args: tuple):
    """``(*state, *tensor args) ↦ module(*args)`` with the state passed in."""

    def forward(*tensors):
        state, inputs = tensors[: len(names)], iter(tensors[len(names) :])
        rebuilt = tuple(next(inputs) if isinstance(arg, torch.Tensor) else arg for arg in args)
        return torch.func.functional_call(module, dict(zip(names, state, strict=True)), rebuilt)

    return forward


def _signature(tensor: torch.Tensor) -> tuple:
    return (tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype, tensor.device)
