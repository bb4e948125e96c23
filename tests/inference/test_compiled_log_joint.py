"""The compiled log joint (:mod:`iai_prob.inference.compiled_log_joint`) against the eager
Pyro path: values and gradients on the task families and a user's model; compiling only
under ``torch.no_grad()``; the replay kept where compiling fails or is off; a precompiled
guide's posterior equal to the replayed one."""

from __future__ import annotations

import pytest
import torch

from iai_prob.inference import IterativeAmortizedGuide, compiled_log_joint, traced_log_joint
from iai_prob.inference.compiled_log_joint import ENV_VAR, compiling_now, kind_name
from iai_prob.inference.log_joint import LogJoint
from iai_prob.inference.traced_log_joint import clear_cache
from iai_prob.models import FAMILIES, get_family

from .test_traced_log_joint import ROWS, _count_model, _eager, _family, _user_data, user_model

EVERY_FAMILY = [  # heavy: 10-25 s of compiling each on a cold TorchInductor cache
    pytest.param(name, marks=pytest.mark.heavy)
    for name in sorted(FAMILIES)
    if name != "gaussian_mixture"  # enumerated: never traced, so never compiled
]


@pytest.fixture(autouse=True)
def _compiling_on(monkeypatch):
    """Compiling allowed (the suite turns it off) and an empty cache."""
    monkeypatch.setenv(ENV_VAR, "1")
    clear_cache()
    yield
    clear_cache()


def _expected(log_joint: LogJoint, z, data):
    """The eager Pyro path's value and gradient."""
    eager = _eager(log_joint)
    with torch.enable_grad():
        point = z.detach().requires_grad_(True)
        value = eager.per_particle(point, data)
        (grad,) = torch.autograd.grad(value.sum(), point)
    return value.detach(), grad


def _kernels() -> dict:
    """The compiled kernels (or failure marks) of the one traced signature, by kind."""
    (entry,) = traced_log_joint._cache.values()
    return entry.evaluator._kernels


def _check_compiled(log_joint, z, data):
    expected_value, expected_grad = _expected(log_joint, z, data)
    with torch.no_grad(), compiling_now():
        value = log_joint.per_particle(z, data)
        got_value, got_grad = log_joint.value_and_grad(z, data)
    kernels = _kernels()
    assert set(kernels) == {"value", "value_and_grad"}
    assert all(callable(kernel) for kernel in kernels.values()), kernels  # none failed
    # float32 tolerance: fused kernels sum in another order
    for got, expected in ((value, expected_value), (got_value, expected_value)):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", EVERY_FAMILY)
def test_compiled_matches_eager_on_every_family(name, make_family, simulate, read_task):
    """Value and gradient on a mini-batch (scale N/|B| ≠ 1) of 2 tasks, 3 particles."""
    family = _family(name, make_family)
    _, x, y = simulate(family, 2, 12)
    layout, data, log_joint = read_task(family.model, x, y)
    _check_compiled(log_joint, 0.5 * torch.randn(3, 2, layout.latent_dim), data.subset(ROWS))


@pytest.mark.heavy  # 10 s of compiling; the precompiled-posterior test covers the default run
def test_compiled_matches_eager_on_a_user_model(read_task):
    x, y = _user_data(0)
    layout, data, log_joint = read_task(user_model, x, y, link="probit", noise=0.1 * x[:, 0])
    _check_compiled(log_joint, torch.randn(4, 1, layout.latent_dim), data)


def test_gradients_through_z_never_compile(read_task):
    """Training and SVI differentiate the replay; nothing is compiled for them."""
    x, y = _user_data(1)
    layout, data, log_joint = read_task(user_model, x, y)
    z = torch.randn(2, 1, layout.latent_dim, requires_grad=True)
    with compiling_now():
        value = log_joint.per_particle(z, data)
        log_joint.value_and_grad(z, data)
    assert value.requires_grad
    assert _kernels() == {}


def test_a_kernel_that_fails_to_compile_keeps_the_replay(monkeypatch, read_task):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    from torch._inductor import compile_fx

    monkeypatch.setattr(compile_fx, "compile_fx", no_compiler)
    x, y = _user_data(2)
    layout, data, log_joint = read_task(user_model, x, y)
    z = torch.randn(3, 1, layout.latent_dim)
    expected_value, expected_grad = _expected(log_joint, z, data)
    with torch.no_grad(), compiling_now():
        for _ in range(2):  # the failure is remembered, not retried
            value, grad = log_joint.value_and_grad(z, data)
            torch.testing.assert_close(value, expected_value)
            torch.testing.assert_close(grad, expected_grad)
    assert list(_kernels()) == ["value_and_grad"]
    assert not callable(_kernels()["value_and_grad"])


def test_compiling_waits_for_its_threshold_and_the_environment(monkeypatch, read_task):
    x, y = _user_data(3)
    layout, data, log_joint = read_task(user_model, x, y)
    z = torch.randn(3, 1, layout.latent_dim)
    monkeypatch.setenv(ENV_VAR, "0")
    with torch.no_grad(), compiling_now():
        log_joint.per_particle(z, data)
    assert _kernels() == {}  # traced at once, but not compiled
    monkeypatch.setenv(ENV_VAR, "1")
    monkeypatch.setattr(compiled_log_joint, "COMPILE_AFTER", 3)
    with torch.no_grad():
        log_joint.per_particle(z, data)
        assert _kernels() == {}  # the second replay: below the threshold
        log_joint.per_particle(z, data)
    assert callable(_kernels()["value"])


def test_a_large_call_compiles_once_its_terms_would_pay_for_the_compiler(monkeypatch, read_task):
    """Many datasets per call: the likelihood terms replayed, not the calls, decide."""
    x, y = _user_data(3)
    layout, data, log_joint = read_task(user_model, x, y)
    z = torch.randn(3, 1, layout.latent_dim)
    with torch.no_grad(), compiling_now(), monkeypatch.context() as off:
        off.setenv(ENV_VAR, "0")
        log_joint.per_particle(z, data)  # traced at once, not compiled
    monkeypatch.setattr(compiled_log_joint, "COMPILE_AFTER", 10**9)
    monkeypatch.setattr(compiled_log_joint, "COMPILE_AFTER_TERMS", 3 * 3 * data.num_points)
    with torch.no_grad():
        log_joint.per_particle(z, data)
        assert _kernels() == {}  # 6 N terms replayed, below 9 N
        log_joint.per_particle(z, data)
    assert callable(_kernels()["value"])


def test_a_precompiled_posterior_is_the_replayed_one(monkeypatch):
    family = get_family("logistic_regression", dim=2)
    _, x, y = family.sample(1, 40, generator=torch.Generator().manual_seed(4))
    guide = IterativeAmortizedGuide(family)
    monkeypatch.setenv(ENV_VAR, "0")
    replayed = guide.posterior(x[0], y[0])
    monkeypatch.setenv(ENV_VAR, "1")
    compiled = guide.precompile(x[0], y[0])
    again = guide.posterior(x[0], y[0])
    for posterior in (compiled, again):
        torch.testing.assert_close(posterior.mean, replayed.mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            posterior.covariance_matrix, replayed.covariance_matrix, rtol=1e-5, atol=1e-6
        )
        assert bool(posterior.status.converged)
        assert int(posterior.status.full_steps) == int(replayed.status.full_steps)
    compiled_kinds = {
        kind_name(kind)
        for entry in traced_log_joint._cache.values()
        for kind, kernel in entry.evaluator._kernels.items()
        if callable(kernel)
    }
    # the phase reads gradients only inside its solver steps
    assert compiled_kinds == {"value", "newton_step", "cvi_step"}


def test_the_data_alone_is_read_once_per_dataset_and_never_per_particle(read_task):
    """A count model's ``lgamma(y + 1)`` runs in the prelude on the data's shape, and the
    body (replayed or compiled) takes it as an input, so a compiler cannot fuse it back
    into the particle broadcast; an in-place change of the data computes it anew."""
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(30, 3, generator=generator)
    y = torch.poisson(torch.full((30,), 2.0), generator=generator)
    layout, data, log_joint = read_task(_count_model, x, y)
    z = 0.3 * torch.randn(40, 1, layout.latent_dim, generator=generator)
    with torch.no_grad(), compiling_now():
        log_joint.per_particle(z, data)
    (entry,) = traced_log_joint._cache.values()
    evaluator = entry.evaluator
    lgamma = torch.ops.aten.lgamma.default
    assert any(n.target is lgamma for n in evaluator.prelude.graph.nodes)
    assert not any(n.target is lgamma for n in evaluator.body.graph.nodes)
    values = []
    for _ in range(2):  # the second time with the counts changed in place
        expected = _eager(log_joint).per_particle(z, data)
        values.append(expected)
        with torch.no_grad():
            torch.testing.assert_close(log_joint.per_particle(z, data), expected)
            value, _ = log_joint.value_and_grad(z, data)
        torch.testing.assert_close(value, expected)
        y.add_(1.0)
    assert not torch.allclose(*values)  # the data the log joint reads did change
