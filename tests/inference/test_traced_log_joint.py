"""The traced log joint (:mod:`iai_prob.inference.traced_log_joint`) against the eager Pyro
path: values, gradients and Hessians on every task family and a user's model; one trace per
input signature; the eager fallback; the shipped guides' posteriors with tracing on and off."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.fx.passes.shape_prop import ShapeProp

from iai_prob import pretrained
from iai_prob.inference import traced_log_joint
from iai_prob.inference.log_joint import LogJoint
from iai_prob.inference.signals import curvature_signal
from iai_prob.inference.traced_log_joint import ENV_VAR, cache_info, clear_cache
from iai_prob.models import FAMILIES, LinearRegression
from iai_prob.models.neural_process import LatentNeuralProcess

ROWS = torch.tensor([0, 3, 4, 7, 10])  # a mini-batch |B| = 5 of N = 12


@pytest.fixture(autouse=True)
def _empty_cache(monkeypatch):
    """An empty cache, tracing on, and every signature traced at its first call."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(traced_log_joint, "TRACE_AFTER", 1)
    clear_cache()
    yield
    clear_cache()


def _eager(log_joint: LogJoint) -> LogJoint:
    return LogJoint(
        log_joint.model, log_joint.layout, log_joint.data_plate, log_joint.enumerate, traced=False
    )


def _family(name, make_family):
    try:
        return make_family(name)
    except KeyError:  # no small configuration in conftest: the defaults are small
        return FAMILIES[name]()


def _value_grad_hessian(log_joint, z, data):
    """``per_particle``, its gradient (with a graph) and Hessian rows in ``z``."""
    z = z.detach().requires_grad_(True)
    value = log_joint.per_particle(z, data)
    (grad,) = torch.autograd.grad(value.sum(), z, create_graph=True)
    rows = [
        torch.autograd.grad(grad[..., j].sum(), z, retain_graph=True)[0]
        for j in range(min(2, z.shape[-1]))
    ]
    return value, grad, torch.stack(rows)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_traced_matches_eager_on_every_family(name, make_family, simulate, read_task):
    """Value, gradient and Hessian rows on a mini-batch (scale N/|B| ≠ 1) of 2 tasks."""
    family = _family(name, make_family)
    _, x, y = simulate(family, 2, 12)
    layout, data, log_joint = read_task(family.model, x, y)
    batch = data.subset(ROWS)
    z = 0.5 * torch.randn(3, 2, layout.latent_dim)
    traced = _value_grad_hessian(log_joint, z, batch)
    eager = _value_grad_hessian(_eager(log_joint), z, batch)
    for got, expected in zip(traced, eager, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the traced graph ran (the enumerated mixture stays eager: it is never traced)
    assert cache_info().traces == (0 if log_joint.enumerate else 1)
    assert cache_info().hits == (0 if log_joint.enumerate else 1)


def user_model(x, y=None, link="logit", noise=None):
    """A user's model: a positive and a real global, a string and a keyword argument."""
    scale = pyro.sample("scale", dist.HalfNormal(2.0))
    w = pyro.sample("w", dist.Normal(x.new_zeros(x.shape[-1]), scale.unsqueeze(-1)).to_event(1))
    eta = (x * w.unsqueeze(-2)).sum(-1)
    if noise is not None:
        eta = eta + noise
    with pyro.plate("data", x.shape[0]):
        if link == "logit":
            return pyro.sample("y", dist.Bernoulli(logits=eta), obs=y)
        probs = dist.Normal(0.0, 1.0).cdf(eta)
        return pyro.sample("y", dist.Bernoulli(probs=probs), obs=y)


def _user_data(seed, num_points=12):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_points, 3, generator=generator)
    return x, torch.bernoulli(torch.full((num_points,), 0.4), generator=generator)


def test_traced_matches_eager_on_a_user_model(read_task):
    x, y = _user_data(0)
    layout, data, log_joint = read_task(user_model, x, y, link="logit", noise=0.1 * x[:, 0])
    z = torch.randn(5, 1, layout.latent_dim)
    for batch in (data, data.subset(ROWS)):
        traced = _value_grad_hessian(log_joint, z, batch)
        eager = _value_grad_hessian(_eager(log_joint), z, batch)
        for got, expected in zip(traced, eager, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert cache_info().traces == 2  # the full data and the mini-batch differ in shape
    _, probit, log_joint = read_task(user_model, x, y, link="probit")
    expected = _eager(log_joint).per_particle(z, probit)
    torch.testing.assert_close(log_joint.per_particle(z, probit), expected)
    assert cache_info().traces == 3  # a new value of a plain argument: a new trace


def test_curvature_signals_match(linreg, simulate, read_task):
    """Every linearization (gradients only, or double backward) through the traced graph."""
    _, x, y = simulate(linreg, 3, 12)
    _, data, log_joint = read_task(linreg.model, x, y)
    loc, precision = torch.randn(3, 2), 2.0 * torch.eye(2).expand(3, 2, 2)
    for scheme in ("sigma_points", "mean", "samples"):
        torch.manual_seed(0)
        got = curvature_signal(log_joint, loc, precision, data, scheme)
        torch.manual_seed(0)
        expected = curvature_signal(_eager(log_joint), loc, precision, data, scheme)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert cache_info().traces == 3  # S = 4 sigma points, S = 1 mean, S = 8 samples


def test_one_trace_serves_every_dataset_and_scale_of_one_shape(linreg, simulate, read_task):
    """Data and N/|B| are inputs of the graph: new values of the same shapes reuse it, and a
    new LogJoint of the same model (as every ``guide.prepare`` builds) too."""
    z = torch.randn(4, 2, 2)
    for seed, num_points in [(0, 12), (1, 12), (2, 20)]:
        _, x, y = simulate(linreg, 2, num_points, seed=seed)
        _, data, log_joint = read_task(linreg.model, x, y)
        batch = data.subset(ROWS)  # |B| = 5 of N = 12 or 20: scales 2.4 and 4
        expected = _eager(log_joint).per_particle(z, batch)
        torch.testing.assert_close(log_joint.per_particle(z, batch), expected)
    assert cache_info().traces == 1 and cache_info().hits == 3
    # the prior's parameters do not depend on the inputs' values: computed once, kept
    (entry,) = traced_log_joint._cache.values()
    folded = {
        name: buffer
        for name, buffer in entry.evaluator.graph.named_buffers()
        if name.startswith("_iai_folded")
    }
    assert folded
    # the known noise scale, broadcast to (S, T, N) by Normal, is kept at its own size
    assert max(buffer.numel() for buffer in folded.values()) < z.shape[0] * z.shape[1]


def test_a_signature_is_traced_only_once_it_recurs(linreg, simulate, read_task, monkeypatch):
    """Signatures met a few times (a training step's last, short mini-batch) stay eager."""
    monkeypatch.setattr(traced_log_joint, "TRACE_AFTER", 3)
    _, x, y = simulate(linreg, 2, 12)
    _, data, log_joint = read_task(linreg.model, x, y)
    z = torch.randn(4, 2, 2)
    expected = _eager(log_joint).per_particle(z, data)
    for calls in range(1, 5):
        torch.testing.assert_close(log_joint.per_particle(z, data), expected)
        assert cache_info().traces == (calls >= 3) and cache_info().hits == max(0, calls - 2)


def test_a_large_call_is_traced_once_its_terms_would_pay_for_the_trace(
    linreg, simulate, read_task, monkeypatch
):
    """Many datasets in one call: the likelihood terms evaluated, not the calls, decide."""
    _, x, y = simulate(linreg, 2, 12)
    _, data, log_joint = read_task(linreg.model, x, y)
    z = torch.randn(4, 2, 2)  # 4 particles x 2 tasks x 12 points = 96 terms a call
    monkeypatch.setattr(traced_log_joint, "TRACE_AFTER", 10**9)
    monkeypatch.setattr(traced_log_joint, "TRACE_AFTER_TERMS", 2 * 96)
    expected = _eager(log_joint).per_particle(z, data)
    for calls in range(1, 4):
        torch.testing.assert_close(log_joint.per_particle(z, data), expected)
        assert cache_info().traces == (calls >= 2) and cache_info().hits == max(0, calls - 1)


def test_a_new_shape_or_particle_count_retraces(linreg, simulate, read_task):
    _, x, y = simulate(linreg, 2, 12)
    _, data, log_joint = read_task(linreg.model, x, y)
    log_joint.per_particle(torch.randn(4, 2, 2), data)
    log_joint.per_particle(torch.randn(4, 2, 2), data.subset(ROWS))
    log_joint.per_particle(torch.randn(6, 2, 2), data)
    assert cache_info().traces == 3
    log_joint.per_particle(torch.randn(4, 2, 2), data)
    assert cache_info().traces == 3 and cache_info().hits == 4


def test_an_outer_plate_gets_its_own_trace(linreg, simulate, read_task):
    """psis_diagnostic's particle plate moves the particle dim: keyed, same value."""
    _, x, y = simulate(linreg, 1, 12)
    _, data, log_joint = read_task(linreg.model, x[0], y[0])
    z = torch.randn(4, 1, 2)
    outside = log_joint.per_particle(z, data)
    with pyro.plate("outer", 7, dim=-3):
        inside = log_joint.per_particle(z, data)
    torch.testing.assert_close(inside, outside)
    assert cache_info().traces == 2


def branching_model(x, y):
    """Python control flow on a data value: cannot be traced without baking the branch."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
    noise = 0.5 if float(y.abs().max()) > 3 else 2.0
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * w.unsqueeze(-2)).sum(-1), noise), obs=y)


def test_data_dependent_control_flow_falls_back_to_eager(read_task):
    x = torch.randn(12, 2)
    small, large = 0.1 * torch.randn(12), torch.full((12,), 5.0)
    _, data, log_joint = read_task(branching_model, x, small)
    z = torch.randn(3, 1, 2)
    for y in (small, large):  # a baked branch would give the small-y noise for both
        data.args = (x, y)
        expected = _eager(log_joint).per_particle(z, data)
        torch.testing.assert_close(log_joint.per_particle(z, data), expected)
    assert cache_info().traces == 0 and cache_info().eager == 1


def test_learned_model_parameters_stay_eager_and_get_gradients(simulate, read_task):
    """A decoder's weights (explicit regime) would be baked in as constants: eager there."""
    family = LatentNeuralProcess(LinearRegression(dim=2, noise_scale=0.5), latent_dim=2)
    _, x, y = simulate(family, 2, 12)
    layout, data, log_joint = read_task(family.model, x, y)
    log_joint.per_particle(torch.randn(3, 2, layout.latent_dim), data).sum().backward()
    weight = family.decoder.net[0].weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert cache_info().traces == 0 and cache_info().eager == 1


def test_pyro_param_stays_eager(read_task):
    def model(x, y):
        bias = pyro.param("bias", torch.tensor(0.3))
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(w.unsqueeze(-1) * x + bias, 1.0), obs=y)

    _, data, log_joint = read_task(model, torch.randn(12), torch.randn(12))
    log_joint.per_particle(torch.randn(3, 1, 1), data).sum().backward()
    assert pyro.param("bias").unconstrained().grad is not None
    assert cache_info().eager == 1


def test_an_object_argument_is_not_traced(read_task):
    class Config:
        noise = 0.5

    def model(x, y, config):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(w.unsqueeze(-1) * x, config.noise), obs=y)

    config = Config()
    _, data, log_joint = read_task(model, torch.randn(12), torch.randn(12), config)
    z = torch.randn(3, 1, 1)
    first = log_joint.per_particle(z, data)
    config.noise = 2.0  # read at every call, as in the eager path
    torch.testing.assert_close(
        log_joint.per_particle(z, data), _eager(log_joint).per_particle(z, data)
    )
    assert not torch.allclose(first, log_joint.per_particle(z, data))
    assert cache_info().traces == 0


def test_tracing_can_be_turned_off(linreg, simulate, read_task, monkeypatch):
    _, x, y = simulate(linreg, 2, 12)
    _, data, log_joint = read_task(linreg.model, x, y)
    _eager(log_joint).per_particle(torch.randn(4, 2, 2), data)
    monkeypatch.setenv(ENV_VAR, "0")
    log_joint.per_particle(torch.randn(4, 2, 2), data)
    assert cache_info().traces == 0
    monkeypatch.setenv(ENV_VAR, "1")
    log_joint.per_particle(torch.randn(4, 2, 2), data)
    assert cache_info().traces == 1


def test_a_model_that_does_not_vectorize_gives_the_same_value_error(read_task):
    def model(x, y):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)

    _, data, log_joint = read_task(model, torch.randn(12, 2), torch.randn(12))
    for evaluator in (log_joint, _eager(log_joint)):
        with pytest.raises(ValueError, match=r"write it so that they broadcast"):
            evaluator.per_particle(torch.randn(3, 1, 2), data)


def cholesky_model(y):
    """The model's own linear algebra: not positive definite for a negative ``v``."""
    v = pyro.sample("v", dist.Normal(1.0, 1.0))
    tril = torch.linalg.cholesky(torch.eye(2) * v[..., None, None])
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(2), scale_tril=tril), obs=y)


def test_linalg_errors_and_invalid_values_pass_through(read_task):
    _, data, log_joint = read_task(cholesky_model, torch.randn(12, 2))
    log_joint.per_particle(torch.ones(3, 1, 1), data)  # traced at a valid point
    assert cache_info().traces == 1
    with pytest.raises(torch.linalg.LinAlgError):
        log_joint.per_particle(-torch.ones(3, 1, 1), data)
    # invalid parameters give non-finite values, as in the eager path
    x, y = _user_data(0)
    layout, data, log_joint = read_task(user_model, x, y)
    z = torch.zeros(2, 1, layout.latent_dim)
    z[0, 0, 0] = -200.0  # a prior scale of exp(-200) = 0
    got, expected = log_joint.per_particle(z, data), _eager(log_joint).per_particle(z, data)
    assert not torch.isfinite(expected[0]).all() and torch.isfinite(expected[1]).all()
    torch.testing.assert_close(got, expected, equal_nan=True)
    assert cache_info().traces == 2


@pytest.mark.parametrize("name", pretrained.available())
def test_shipped_guides_give_the_same_posterior_traced_or_not(name, monkeypatch):
    guide = pretrained.load(name)
    _, x, y = guide.family.sample(1, 64, generator=torch.Generator().manual_seed(3))
    if guide.prepare(x[0], y[0]).log_joint.enumerate:
        pytest.skip("an enumerated log joint (the mixture's) is never traced")
    posteriors = {}
    for mode in ("1", "0"):
        monkeypatch.setenv(ENV_VAR, mode)
        posteriors[mode] = guide.posterior(x[0], y[0])
    torch.testing.assert_close(posteriors["1"].mean, posteriors["0"].mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        posteriors["1"].covariance_matrix, posteriors["0"].covariance_matrix, rtol=0, atol=1e-5
    )
    assert cache_info().hits > 0


def _count_model(x, y=None):
    """A Poisson regression written as users write it: ``(x * w).sum(-1)``."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Poisson((x * w).sum(-1).exp()), obs=y)


def test_per_point_work_leaves_the_particle_broadcast(read_task):
    """``lgamma(y + 1)`` runs on the data's shape and the linear predictor is one
    contraction, not an ``(S, N, k)`` product; the values are the eager ones."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(30, 3, generator=generator)
    y = torch.poisson(torch.full((30,), 2.0), generator=generator)
    layout, data, log_joint = read_task(_count_model, x, y)
    z = 0.3 * torch.randn(40, 1, layout.latent_dim)
    expected = _eager(log_joint).per_particle(z, data)
    torch.testing.assert_close(log_joint.per_particle(z, data), expected)  # exact: training
    with torch.no_grad():  # inference replays the rewritten graph: equal to rounding
        torch.testing.assert_close(log_joint.per_particle(z, data), expected)
    (entry,) = traced_log_joint._cache.values()
    graph = entry.evaluator.fast
    assert graph is not entry.evaluator.graph
    scale = torch.tensor(1.0, dtype=torch.float64)
    ShapeProp(graph).propagate(z, scale, *[t for t in (x, y)])
    nodes = [n for n in graph.graph.nodes if n.op == "call_function"]
    (lgamma,) = [n for n in nodes if n.target is torch.ops.aten.lgamma.default]
    assert tuple(lgamma.meta["tensor_meta"].shape) == (30,)
    assert any(n.target is torch.ops.aten.einsum.default for n in nodes)
    sizes = [n.meta["tensor_meta"].shape.numel() for n in nodes if "tensor_meta" in n.meta]
    assert max(sizes) < 40 * 30 * 3  # nothing of (particles, points, features)


def test_xlogy_is_rewritten_with_its_values_and_gradients_at_zero_counts(read_task):
    """A Poisson's ``xlogy(y, rate)`` becomes ``y · log(where(y = 0, 1, rate))`` (ATen's
    ``xlogy`` is not vectorized) with the count mask on the data's shape; values and
    gradients are the eager ones, zero counts included."""
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(25, 3, generator=generator)
    y = torch.poisson(torch.full((25,), 0.7), generator=generator)
    assert (y == 0).sum() >= 5
    layout, data, log_joint = read_task(_count_model, x, y)
    z = (0.3 * torch.randn(40, 1, layout.latent_dim, generator=generator)).requires_grad_()
    eager = _eager(log_joint).per_particle(z, data)
    (expected,) = torch.autograd.grad(eager.sum(), z)
    with torch.no_grad():
        for _ in range(traced_log_joint.TRACE_AFTER + 1):
            value, gradient = log_joint.value_and_grad(z.detach(), data)
    torch.testing.assert_close(value, eager.detach())
    torch.testing.assert_close(gradient, expected)
    (entry,) = traced_log_joint._cache.values()
    nodes = [n for n in entry.evaluator.fast.graph.nodes if n.op == "call_function"]
    assert not any(n.target is torch.ops.aten.xlogy.Tensor for n in nodes)
    assert any(n.target is torch.ops.aten.xlogy.Tensor for n in entry.evaluator.graph.graph.nodes)
    scale = torch.tensor(1.0, dtype=torch.float64)
    ShapeProp(entry.evaluator.fast).propagate(z.detach(), scale, x, y)
    (mask,) = [n for n in nodes if n.target is torch.ops.aten.eq.Scalar]
    assert tuple(mask.meta["tensor_meta"].shape) == (25,)
