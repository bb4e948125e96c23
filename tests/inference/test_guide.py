"""``IterativeAmortizedGuide`` as a Pyro guide and through its own API."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.importance import psis_diagnostic
from torch.distributions import biject_to, constraints, kl_divergence

from iai_prob.inference import IterativeAmortizedGuide, fit

# ------------------------------------------------------------ construction
BAD_ARGUMENTS = [
    ("family", "bogus"),
    ("encoder", "bogus"),
    ("linearization", "bogus"),
    ("signals", ("bogus",)),
    ("signals", ()),
    ("batch_size", 0),
    ("batch_size", 2.5),
    ("num_steps", -1),
    ("num_steps", 1.5),
    ("max_relinearizations", -1),
    ("max_relinearizations", 1.5),
]


@pytest.mark.parametrize(("option", "value"), BAD_ARGUMENTS)
def test_bad_constructor_arguments_name_the_value(option, value, linreg, make_guide):
    with pytest.raises(ValueError) as info:
        make_guide(linreg, **{option: value})
    message = str(info.value)
    assert option.split("_")[0] in message and repr(value) in message


def test_guide_needs_the_model_first(linreg, make_guide):
    guide = make_guide(linreg)
    assert guide.family is linreg
    with pytest.raises(RuntimeError, match="has not seen the model"):
        _ = guide.latent_dim


def test_guide_of_a_bound_method_keeps_the_family(linreg, make_guide):
    assert make_guide(linreg.model).family is linreg


def test_observations_are_required(linreg, make_guide, simulate):
    guide = make_guide(linreg)
    _, x, _ = simulate(linreg, 2, 8)
    with pytest.raises(ValueError, match=r"no observed site.*pass the observations"):
        guide(x)


def _any_dim_regression(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal((x * w.unsqueeze(-2)).sum(-1), 0.5), obs=y)


def test_data_of_another_layout_is_refused(make_guide):
    guide = make_guide(_any_dim_regression)
    guide(torch.randn(8, 2), torch.randn(8))
    assert guide.layout_signature == [["w", [2]]]
    with pytest.raises(ValueError, match="differ from those the guide was built for"):
        guide(torch.randn(8, 3), torch.randn(8))


# --------------------------------------------------------------- with Pyro
SVI_FAMILIES = [
    pytest.param({"family": "diagonal"}, id="diagonal"),
    pytest.param({"family": "full_rank"}, id="full_rank"),
    pytest.param({"family": "low_rank", "rank": 1}, id="low_rank-rank1"),
    pytest.param({"family": "low_rank"}, id="low_rank-default-rank"),
]


@pytest.mark.parametrize("options", SVI_FAMILIES)
@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO])
def test_svi_trains_the_guide(options, elbo, linreg, make_guide, simulate):
    _, x, y = simulate(linreg, 4, 24)
    guide = make_guide(linreg, **options)
    svi = SVI(linreg.model, guide, pyro.optim.Adam({"lr": 0.01}), elbo())
    losses = [svi.step(x, y)]
    before = {k: v.clone() for k, v in guide.refiner.state_dict().items()}
    losses += [svi.step(x, y) for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses)
    after = guide.refiner.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_trace_enum_elbo_with_gaussian_mixture(batched, make_family, make_guide, dataset):
    family = make_family("gaussian_mixture")
    x, y = dataset(family, 3, 12, batched, seed=2)
    guide = make_guide(family, batch_size=6)
    optimizer = pyro.optim.Adam({"lr": 0.001})
    svi = SVI(family.model, guide, optimizer, TraceEnum_ELBO(max_plate_nesting=2))
    losses = [svi.step(x, y) for _ in range(2)]
    assert all(math.isfinite(loss) for loss in losses)
    trace = poutine.trace(guide).get_trace(x, y)
    weights = trace.nodes["weights"]["value"]
    assert weights.shape == ((3, 1, 2) if batched else (2,))
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert trace.nodes["locs"]["value"].shape == ((3, 1, 2, 2) if batched else (2, 2))


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_predictive_shapes(batched, linreg, make_guide, dataset):
    x, y = dataset(linreg, 3, 10, batched)
    guide = make_guide(linreg)
    samples = Predictive(linreg.model, guide=guide, num_samples=5)(x, y)
    batch = (3, 1) if batched else (1,)
    assert samples["w"].shape == (5, *batch, 2)
    assert samples["y"].shape == (5, *y.shape)
    assert samples["w"].std(0).min() > 0  # independent draws


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_trace_site_shapes_and_density(batched, linreg, make_guide, dataset):
    x, y = dataset(linreg, 3, 10, batched)
    guide = make_guide(linreg)
    trace = poutine.trace(guide).get_trace(x, y)
    shape = (3, 1, 2) if batched else (2,)
    latent = trace.nodes[f"_{guide._pyro_name}_latent"]
    assert latent["infer"]["is_auxiliary"]
    assert latent["value"].shape == shape
    assert trace.nodes["w"]["value"].shape == shape
    torch.testing.assert_close(trace.nodes["w"]["value"], latent["value"])
    trace.compute_log_prob()
    q = guide.posterior(x, y)
    expected = q.log_prob(latent["value"].reshape((*q.batch_shape, 2)))
    torch.testing.assert_close(latent["log_prob"].reshape(expected.shape), expected)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_psis_diagnostic_is_a_finite_float(batched, linreg, make_guide, dataset):
    x, y = dataset(linreg, 3, 16, batched)
    guide = make_guide(linreg)
    k_hat = psis_diagnostic(linreg.model, guide, x, y, num_particles=200)
    assert isinstance(k_hat, float) and math.isfinite(k_hat)


CONSTRAINED = {
    "beta_bernoulli": constraints.unit_interval,
    "dirichlet_categorical": constraints.simplex,
}


@pytest.mark.parametrize("name", sorted(CONSTRAINED))
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_constrained_samples_and_jacobian(name, batched, make_family, make_guide, dataset):
    family = make_family(name)
    x, y = dataset(family, 3, 20, batched)
    guide = make_guide(family)
    samples = Predictive(family.model, guide=guide, num_samples=8, return_sites=["probs"])(x, y)
    assert CONSTRAINED[name].check(samples["probs"]).all()
    # log q(θ) = log q(z) − log |det ∂T/∂z| on the emitted site
    trace = poutine.trace(guide).get_trace(x, y)
    trace.compute_log_prob()
    z = trace.nodes[f"_{guide._pyro_name}_latent"]["value"]
    value = trace.nodes["probs"]["value"]
    transform = biject_to(CONSTRAINED[name])
    event = 1 if name == "dirichlet_categorical" else 0
    log_jacobian = transform.log_abs_det_jacobian(z.squeeze(-1) if event == 0 else z, value)
    torch.testing.assert_close(
        trace.nodes["probs"]["log_prob"], -log_jacobian, rtol=1e-5, atol=1e-5
    )
    median = guide.median(x, y)["probs"]
    torch.testing.assert_close(median, transform(guide.posterior(x, y).mean).reshape(median.shape))


# ----------------------------------------------------------------- user API
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_posterior_median_and_quantiles(batched, linreg, make_guide, dataset):
    x, y = dataset(linreg, 3, 10, batched)
    guide = make_guide(linreg)
    q = guide.posterior(x, y)
    batch = (3,) if batched else ()
    assert (q.batch_shape, q.event_shape) == (batch, (2,))
    assert (torch.linalg.eigvalsh(q.precision_matrix) > 0).all()
    median = guide.median(x, y)["w"]
    torch.testing.assert_close(median, q.mean)
    quantiles = guide.quantiles([0.05, 0.5, 0.95], x, y)["w"]
    assert quantiles.shape == (3, *batch, 2)
    assert (quantiles[0] < quantiles[1]).all() and (quantiles[1] < quantiles[2]).all()
    torch.testing.assert_close(quantiles[1], median)
    torch.testing.assert_close(
        quantiles[2] - quantiles[1], 1.6448536 * q.variance.sqrt(), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_sample_draws_the_posterior_by_site(batched, linreg, make_guide, dataset):
    """``guide.sample``: constrained draws by site, seeded by the guide, moments of ``q``."""
    x, y = dataset(linreg, 3, 10, batched)
    guide = make_guide(linreg)
    q = guide.posterior(x, y)
    draws = guide.sample(x, y, num_samples=20_000)["w"]
    assert draws.shape == (20_000, *((3,) if batched else ()), 2)
    torch.testing.assert_close(draws.mean(0), q.mean, rtol=0, atol=0.05 * float(q.stddev.max()))
    torch.testing.assert_close(draws.std(0), q.stddev, rtol=0.05, atol=0)
    torch.testing.assert_close(guide.sample(x, y, num_samples=20_000)["w"], draws)  # seeded
    with pytest.raises(ValueError, match="num_samples"):
        guide.sample(x, y, num_samples=0)


def test_sample_of_a_constrained_site_lies_in_its_support(make_family, make_guide, simulate):
    family = make_family("dirichlet_categorical")
    _, x, y = simulate(family, 1, 20)
    probs = make_guide(family).sample(x[0], y[0], num_samples=500)["probs"]
    assert probs.shape[0] == 500 and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(500))


@pytest.mark.parametrize(
    "name",
    ["beta_bernoulli", "dirichlet_categorical"],
)
def test_quantiles_of_a_constrained_site_are_ordered(name, make_family, make_guide, simulate):
    family = make_family(name)
    _, x, y = simulate(family, 4, 20)
    quantiles = make_guide(family).quantiles([0.05, 0.5, 0.95], x, y)["probs"]
    # marginal quantiles of probabilities lie in [0, 1] (a simplex's need not sum to one)
    assert ((quantiles >= 0) & (quantiles <= 1)).all()
    assert (quantiles[0] <= quantiles[1]).all() and (quantiles[1] <= quantiles[2]).all()


@pytest.mark.parametrize(
    ("levels", "bad"),
    [([0.5, 1.5], "[1.5]"), ([-0.1], "[-0.1]"), ([float("nan"), 0.5], "[nan]"), (2.0, "[2.0]")],
    ids=["above-one", "negative", "nan", "scalar"],
)
def test_quantiles_outside_zero_one_are_refused(levels, bad, linreg, make_guide, simulate):
    _, x, y = simulate(linreg, 1, 10)
    guide = make_guide(linreg)
    with pytest.raises(ValueError, match=r"quantiles must lie in \[0, 1\], got ") as info:
        guide.quantiles(levels, x[0], y[0])  # was NaN in the result, silently
    assert bad in str(info.value)
    with pytest.raises(ValueError, match="1-D sequence"):
        guide.quantiles([[0.5]], x[0], y[0])
    # the ends are the support's ends: -inf and +inf for a real site
    ends = guide.quantiles([0.0, 1.0], x[0], y[0])["w"]
    assert (ends[0] == -math.inf).all() and (ends[1] == math.inf).all()


@pytest.mark.parametrize(
    ("num_points", "batch_size", "steps"), [(40, 16, 3), (64, 16, 4), (8, 16, 1)]
)
def test_refinement_trace(num_points, batch_size, steps, linreg, make_guide, simulate):
    _, x, y = simulate(linreg, 3, num_points)
    trace = make_guide(linreg, batch_size=batch_size).refinement_trace(x, y)
    assert len(trace) == steps + 1
    assert [entry.step for entry in trace] == list(range(steps + 1))
    assert trace[0].info is None
    assert all(torch.isfinite(entry.elbo) and entry.elbo.dim() == 0 for entry in trace)
    for entry in trace[1:]:
        assert ((entry.info.step_size > 0) & (entry.info.step_size < 1)).all()
        assert entry.state.step == entry.step
    assert trace[-1].state.points_seen == num_points
    assert trace[-1].elbo > trace[0].elbo  # the untrained guide starts at the prior N(0, I)
    assert len(make_guide(linreg).refinement_trace(x, y, num_steps=2)) == 3


def test_one_shot_guide_takes_no_steps(linreg, make_guide, simulate):
    _, x, y = simulate(linreg, 2, 32)
    guide = make_guide(linreg, num_steps=0)
    assert len(guide.refinement_trace(x, y)) == 1
    # untrained, the initial head's zeros are the prior's location (prior_standardization)
    torch.testing.assert_close(guide.posterior(x, y).mean, guide.refiner.prior_loc.expand(2, 2))


def test_refinement_trace_of_an_enumerated_model(make_family, make_guide, simulate):
    family = make_family("gaussian_mixture")
    _, x, y = simulate(family, 2, 12)
    trace = make_guide(family, batch_size=6).refinement_trace(x, y)
    assert len(trace) == 3 and all(torch.isfinite(entry.elbo) for entry in trace)


@pytest.mark.parametrize("greedy", [True, False])
def test_greedy_trajectory_stops_gradients(greedy, linreg, make_guide, simulate):
    _, x, y = simulate(linreg, 2, 32)
    guide = make_guide(linreg)
    guide(x, y)
    state = guide.final_state(guide.prepare(x, y), greedy=greedy)
    bias = guide.refiner.init_head.bias
    (grad,) = torch.autograd.grad(state.loc.sum(), bias, allow_unused=True)
    reaches_init = grad is not None and grad.abs().sum() > 0
    assert reaches_init != greedy


def test_schedule_is_one_seeded_pass(linreg, make_guide):
    guide = make_guide(linreg, batch_size=16, seed=3)
    schedule = guide.schedule(40)
    assert [len(b) for b in schedule] == [14, 13, 13]
    assert all(torch.equal(a, b) for a, b in zip(schedule, guide.schedule(40), strict=True))
    assert len(guide.schedule(40, num_steps=5)) == 5
    assert [len(b) for b in guide.schedule(10)] == [10]


def _kl_to_exact(q, linreg, x, y):
    return float(kl_divergence(q, linreg.exact_posterior(x, y)))


def test_refine_tensors_and_streams_approach_the_exact_posterior(linreg, make_guide, simulate):
    """An untrained guide's default update averages exact mini-batch targets (linear model)."""
    _, x, y = simulate(linreg, 1, 256)
    x, y = x[0], y[0]
    guide = make_guide(linreg, batch_size=32)
    from_tensors = guide.refine(x, y)
    assert (from_tensors.batch_shape, from_tensors.event_shape) == ((), (2,))
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    from_stream = guide.refine(batches, num_points=256)
    assert _kl_to_exact(from_tensors, linreg, x, y) < 0.05
    assert _kl_to_exact(from_stream, linreg, x, y) < 0.05
    twice = guide.refine(lambda: iter(batches), num_points=256, passes=2)
    assert _kl_to_exact(twice, linreg, x, y) < 0.05
    assert _kl_to_exact(guide.refine(x, y, passes=2, batch_size=64), linreg, x, y) < 0.05


def test_refine_stream_scales_the_likelihood_by_num_points(linreg, make_guide, simulate):
    """The precision grows with the N streamed, whatever |B|."""
    _, x, y = simulate(linreg, 1, 32)
    guide = make_guide(linreg)
    small = guide.refine([(x[0], y[0])], num_points=32)
    large = guide.refine([(x[0], y[0])] * 100, num_points=3200)
    ratio = torch.linalg.det(large.precision_matrix) / torch.linalg.det(small.precision_matrix)
    assert ratio > 50**2


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda g, b: g.refine(iter(b)), "num_points"),
        (lambda g, b: g.refine(iter(b), num_points=0), "num_points"),
        (lambda g, b: g.refine(iter(b), num_points=32, passes=2), "re-iterable"),
        (lambda g, b: g.refine([], num_points=32), "no mini-batches"),
        (lambda g, b: g.refine(b, num_points=32, passes=0), "passes"),
        (lambda g, b: g.refine(b, num_points=64), "streamed 32 points"),
    ],
    ids=[
        "no-num-points",
        "zero-num-points",
        "one-shot-iterator",
        "empty",
        "zero-passes",
        "wrong-num-points",
    ],
)
def test_refine_rejects_bad_streams(call, pattern, linreg, make_guide, simulate):
    _, x, y = simulate(linreg, 1, 32)
    batches = [(x[0, :16], y[0, :16]), (x[0, 16:], y[0, 16:])]
    with pytest.raises(ValueError, match=pattern):
        call(make_guide(linreg), batches)


def test_polish_improves_the_elbo(linreg, make_guide, simulate):
    """``ELBO(q) = log p(D) − KL(q ‖ p)``: polishing must lower the KL to the exact posterior."""
    _, x, y = simulate(linreg, 1, 24)
    x, y = x[0], y[0]
    guide = make_guide(linreg, num_steps=0)  # the untrained one-shot state: the prior N(0, I)
    start = guide.posterior(x, y)
    polished = guide.polish(x, y, steps=100, learning_rate=0.05)
    assert (polished.batch_shape, polished.event_shape) == ((), (2,))
    log_evidence = float(linreg.log_evidence(x, y))
    elbo_start = log_evidence - _kl_to_exact(start, linreg, x, y)
    elbo_polished = log_evidence - _kl_to_exact(polished, linreg, x, y)
    assert elbo_polished > elbo_start + 10.0
    assert _kl_to_exact(polished, linreg, x, y) < 1.0


@pytest.mark.parametrize("signals", [("data",), ("grad",), ("data", "grad")])
def test_signal_subsets_train_and_run(signals, linreg, make_guide, simulate):
    guide = make_guide(linreg, signals=signals)
    result = fit(guide, linreg, steps=3, tasks_per_step=4, num_points=(8, 24), progress=False)
    assert result.steps == 3 and all(math.isfinite(loss) for loss in result.losses)
    assert (guide.refiner.site_target is None) == ("grad" in signals)
    _, x, y = simulate(linreg, 2, 20)
    q = guide.posterior(x, y)
    assert torch.isfinite(q.mean).all()
    assert (torch.linalg.eigvalsh(q.precision_matrix) > 0).all()
    trace = guide.refinement_trace(x, y)
    assert bool(torch.isnan(trace[1].info.batch_log_joint).all()) == ("grad" not in signals)


def test_featurize_override_feeds_the_encoder(linreg, simulate):
    def featurize(x, y):
        return torch.stack([y, y.abs()], dim=-1)

    guide = IterativeAmortizedGuide(
        linreg,
        encoder="deep_sets",
        encoder_options={"embed_dim": 4, "hidden_dim": 8},
        featurize=featurize,
    )
    _, x, y = simulate(linreg, 2, 10)
    guide(x, y)
    assert guide.refiner.feature_dim == 2


def test_guide_runs_for_a_plain_pyro_model(make_guide):
    def model(x, y=None):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            return pyro.sample("y", dist.Normal(x, scale), obs=y)

    guide = make_guide(model)
    assert guide.family is None
    x = torch.randn(30)
    y = x + 0.3 * torch.randn(30)
    samples = Predictive(model, guide=guide, num_samples=20, return_sites=["scale"])(x, y)
    assert (samples["scale"] > 0).all()


def test_conjugate_posterior_needs_no_relinearization(
    linreg, make_guide, simulate, monkeypatch, tmp_path
):
    """A Gaussian likelihood's target does not depend on where it is linearized, so
    ``max_relinearizations=0`` gives the same posterior with fewer log-joint evaluations,
    and the option survives a checkpoint."""
    from iai_prob.inference.log_joint import LogJoint

    _, x, y = simulate(linreg, 4, 48)
    calls = []
    per_particle = LogJoint.per_particle

    def counted(self, z, data):
        calls.append(z.shape[0])
        return per_particle(self, z, data)

    monkeypatch.setattr(LogJoint, "per_particle", counted)
    found = {}
    for sweeps in (2, 0):
        pyro.clear_param_store()
        guide = make_guide(linreg, max_relinearizations=sweeps)
        calls.clear()
        with torch.no_grad():
            posterior = guide.posterior(x, y)
        found[sweeps] = (posterior, len(calls))
    (proximal, proximal_calls), (direct, direct_calls) = found[2], found[0]
    assert direct_calls < proximal_calls
    torch.testing.assert_close(direct.loc, proximal.loc, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        direct.precision_matrix, proximal.precision_matrix, atol=1e-3, rtol=1e-4
    )
    guide.save(tmp_path / "direct")
    loaded = IterativeAmortizedGuide.load(tmp_path / "direct", linreg)
    assert loaded.config["max_relinearizations"] == 0
    assert loaded.refiner.options.max_relinearizations == 0


# ------------------------------------------------------------------ threads
def test_concurrent_calls_from_threads_give_the_serial_answers(linreg, make_guide, simulate):
    """Pyro's handler stack is process-global: without the guide's lock, 4 threads calling
    ``posterior`` failed with "This Messenger is not on the bottom of the stack" or an
    IndexError, every time (3 of 3 runs)."""
    from concurrent.futures import ThreadPoolExecutor

    _, x, y = simulate(linreg, 8, 12)
    guide = make_guide(linreg, batch_size=4)
    other = make_guide(linreg, batch_size=6, seed=1)
    serial = [guide.posterior(x[i], y[i]).mean for i in range(8)]
    serial_other = [other.posterior(x[i], y[i]).mean for i in range(8)]
    serial_draws = [guide(x[i], y[i])["w"].shape for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        means = list(pool.map(lambda i: guide.posterior(x[i], y[i]).mean, range(8)))
        others = list(pool.map(lambda i: other.posterior(x[i], y[i]).mean, range(8)))
        draws = list(pool.map(lambda i: guide(x[i], y[i])["w"].shape, range(8)))
    for found, expected in zip(means + others, serial + serial_other, strict=True):
        torch.testing.assert_close(found, expected, rtol=0, atol=0)
    assert draws == serial_draws


# ------------------------------------------------------------- Predictive
def test_predictive_with_no_samples_raises_pyros_own_error(linreg, make_guide, simulate):
    """``Predictive(num_samples=0)`` is refused by Pyro itself, before the guide is asked
    for a sample: its vectorizing ``pyro.plate`` of size 0 raises ``ZeroDivisionError``,
    for an ``AutoNormal`` guide and for no guide alike, so users get Pyro's behaviour."""
    from pyro.infer.autoguide import AutoNormal

    _, x, y = simulate(linreg, 1, 10)
    guide = make_guide(linreg)
    auto = AutoNormal(linreg.model)
    auto(x[0], y[0])
    for candidate in (guide, auto, None):
        with pytest.raises(ZeroDivisionError, match="size cannot be zero"):
            Predictive(linreg.model, guide=candidate, num_samples=0)(x[0], y[0])


def test_predictive_draws_refine_once_per_dataset(linreg, make_guide, simulate, monkeypatch):
    """``Predictive``'s S draws (one guide call each, under no_grad) reuse one refined
    state while the dataset, the weights and the options are unchanged."""
    _, x, y = simulate(linreg, 1, 30)
    x, y = x[0], y[0]
    guide = make_guide(linreg)
    expected = guide.posterior(x, y)
    calls = []
    original = type(guide).final_state
    monkeypatch.setattr(
        type(guide), "final_state", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    draws = pyro.infer.Predictive(linreg.model, guide=guide, num_samples=400)(x, y)["w"]
    assert len(calls) == 1
    error = (draws.reshape(400, -1).mean(0) - expected.mean).abs()
    assert (error < 4 * expected.stddev / 20).all()  # 4 standard errors of 400 draws
    y[0] += 1.0  # an in-place edit of the data: refined again
    pyro.infer.Predictive(linreg.model, guide=guide, num_samples=3)(x, y)
    assert len(calls) == 2
    with torch.no_grad():
        next(guide.refiner.parameters()).add_(0.01)  # new weights: refined again
    pyro.infer.Predictive(linreg.model, guide=guide, num_samples=3)(x, y)
    assert len(calls) == 3
    guide.config["num_steps"] = 1  # new options: refined again
    pyro.infer.Predictive(linreg.model, guide=guide, num_samples=3)(x, y)
    assert len(calls) == 4
    guide(x, y)  # gradients on (SVI, training): never memoized
    guide(x, y)
    assert len(calls) == 6
