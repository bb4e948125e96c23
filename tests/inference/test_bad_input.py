"""The bad-input table of ``docs/reliability.md``, one test per row, through the public API.

Every row calls the guide (or loads a checkpoint) the way a user would and checks the
error's type and that its message names the problem; the rows that are accepted
(``N = 1``, float64, integer observations) check that the answer is right instead.
"""

from __future__ import annotations

import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from iai_prob.inference import CheckpointError, IterativeAmortizedGuide
from iai_prob.models import BetaBernoulli, DirichletCategorical


@pytest.fixture
def built(linreg, make_guide, simulate):
    """A guide built on the 2-feature linear regression and one dataset ``(x, y)``, N = 12."""
    guide = make_guide(linreg, family="full_rank", batch_size=4)
    _, x, y = simulate(linreg, 1, 12)
    guide(x[0], y[0])
    return guide, x[0], y[0]


def _with(tensor, index, value):
    tensor = tensor.clone()
    tensor.view(-1)[index] = value
    return tensor


# ------------------------------------------------------------------ data rows
DATA_ROWS = {
    "nan-in-observations": (lambda x, y: (x, _with(y, 3, float("nan"))), "NaN or inf"),
    "inf-in-covariates": (lambda x, y: (_with(x, 5, float("inf")), y), "NaN or inf"),
    "wrong-feature-dimension": (
        lambda x, y: (torch.randn(12, 3), y),
        re.escape("x: float32 tensor of shape (12, 3)"),
    ),
    "observations-of-another-length": (lambda x, y: (x, y[:5]), "observed site 'y'"),
    "empty-dataset": (lambda x, y: (x[:0], y[:0]), "argument 'x' is empty"),
    "empty-batch-of-tasks": (
        lambda x, y: (x[:0].unsqueeze(0), y[:0].unsqueeze(0)),
        "plate of the model has size 0",
    ),
    "integer-covariates": (lambda x, y: (x.round().long(), y), "x: int64 tensor"),
    "numpy-arrays": (lambda x, y: (x.numpy(), y.numpy()), "argument 'x' is a numpy.ndarray"),
    "covariates-without-a-point-axis": (lambda x, y: (x[:, 0], y), "expected x with 2 dims"),
    # (12, 1) against a batch shape (12,) would broadcast to (12, 12): each point scored 12 times
    "observations-of-shape-(N,1)": (
        lambda x, y: (x, y[:, None]),
        re.escape("value of shape (12, 1) broadcasts against its distribution's shape (12,): "),
    ),
}


@pytest.mark.parametrize("row", sorted(DATA_ROWS))
def test_bad_data_are_refused_by_name(row, built):
    guide, x, y = built
    make_arguments, pattern = DATA_ROWS[row]
    with pytest.raises(ValueError, match=pattern):
        guide.posterior(*make_arguments(x, y))


@pytest.mark.parametrize("row", ["empty-dataset", "integer-covariates", "numpy-arrays"])
def test_bad_data_are_refused_before_the_guide_is_built(row, linreg, make_guide, built):
    _, x, y = built
    make_arguments, pattern = DATA_ROWS[row]
    with pytest.raises(ValueError, match=pattern):
        make_guide(linreg).posterior(*make_arguments(x, y))


def test_a_single_data_point_gives_a_finite_posterior(built, linreg):
    guide, x, y = built
    posterior = guide.posterior(x[:1], y[:1])
    assert torch.isfinite(posterior.mean).all()
    torch.linalg.cholesky(posterior.covariance_matrix)  # positive definite
    # the natural-gradient step is exact for a conjugate model at any N, N = 1 included
    # (measured: 3e-5 nats for this untrained guide)
    exact = linreg.exact_posterior(x[:1], y[:1])
    kl = torch.distributions.kl_divergence(posterior, exact)
    assert torch.isfinite(kl) and kl < 1e-2, float(kl)


def test_float64_inputs_give_the_float32_answer(built):
    guide, x, y = built
    expected = guide.posterior(x, y)
    found = guide.posterior(x.double(), y.double())
    assert found.mean.dtype == torch.float32
    torch.testing.assert_close(found.mean, expected.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(found.covariance_matrix, expected.covariance_matrix)


def test_integer_observations_of_a_categorical_likelihood_are_accepted(make_guide):
    family = DirichletCategorical(num_categories=3, concentration=1.5)
    guide = make_guide(family)
    _, x, y = family.sample(1, 30, generator=torch.Generator().manual_seed(1))
    expected = guide.posterior(x[0], y[0].float())
    found = guide.posterior(x[0], y[0].long())
    torch.testing.assert_close(found.mean, expected.mean)


def test_integer_observations_of_a_bernoulli_likelihood_are_named(make_guide):
    family = BetaBernoulli(concentration1=2.0, concentration0=3.0)
    _, x, y = family.sample(1, 30, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="y: int64 tensor of shape"):
        make_guide(family).posterior(x[0], y[0].long())


def test_an_extra_covariate_changes_the_feature_dimension(make_guide):
    def model(x, y=None, z=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            return pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)

    guide = make_guide(model)
    x, y = torch.randn(10), torch.randn(10)
    guide(x, y)
    with pytest.raises(ValueError, match="3 features per point but the guide was built for 2"):
        guide.posterior(x, y, z=torch.randn(10))


# ------------------------------------------------------------------ model rows
class _SquareSupport(dist.Normal):
    """A distribution whose support has no bijection to unconstrained space."""

    support = constraints.square


class _DependentSupport(dist.Normal):
    """A distribution whose support is not declared (``constraints.dependent``)."""

    support = constraints.dependent


def _regression_with(site):
    def model(x, y=None):
        theta = site()
        with pyro.plate("data", len(x)):
            return pyro.sample("y", dist.Normal(theta.float().sum() * x, 1.0), obs=y)

    return model


def _in_subsampled_plate():
    with pyro.plate("groups", 3, subsample_size=2):
        return pyro.sample("mu", dist.Normal(0.0, 1.0))


def _with_local(site):
    """A regression with a global ``w`` and the local latent ``site()`` added to each point."""

    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            local = site()
            return pyro.sample("y", dist.Normal(w * x + local, 1.0), obs=y)

    return model


def _param_only(x, y=None):
    w = pyro.param("w", torch.tensor(0.0))
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)


MODEL_ROWS = {
    "discrete-global-latent": (
        _regression_with(lambda: pyro.sample("k", dist.Categorical(torch.ones(3) / 3))),
        {},
        ["'k'", "discrete"],
    ),
    "unsupported-constraint": (
        _regression_with(lambda: pyro.sample("m", _SquareSupport(torch.zeros(2, 2), 1.0))),
        {},
        ["'m'", "no bijection"],
    ),
    "undeclared-support": (
        _regression_with(lambda: pyro.sample("m", _DependentSupport(0.0, 1.0))),
        {},
        ["'m'", "declares no bijection"],
    ),
    "data-plate-not-found": (
        _regression_with(lambda: pyro.sample("w", dist.Normal(0.0, 1.0))),
        {"data_plate": "observations"},
        ["no plate named 'observations'", "found plates ['data']"],
    ),
    "global-latent-in-a-subsampled-plate": (
        _regression_with(_in_subsampled_plate),
        {},
        ["'mu'", "'groups'", "subsampled to 2 of 3", "do not subsample"],
    ),
    "no-global-latent": (_regression_with(lambda: torch.tensor(1.0)), {}, ["no latent site"]),
    "only-a-pyro-param": (_param_only, {}, ["pyro.param site(s) ['w']", "prior with pyro.sample"]),
    "continuous-local-latent": (
        _with_local(lambda: pyro.sample("u", dist.Normal(0.0, 1.0))),
        {},
        ["local latent site 'u'", "continuous", "never be inferred"],
    ),
    "discrete-local-latent-not-enumerated": (
        _with_local(lambda: pyro.sample("c", dist.Bernoulli(0.5))),
        {},
        ["local latent site 'c'", "not enumerated", "infer={'enumerate': 'parallel'}"],
    ),
    "enumerated-local-latent-without-finite-support": (
        _with_local(lambda: pyro.sample("k", dist.Poisson(2.0), infer={"enumerate": "parallel"})),
        {},
        ["local latent site 'k'", "no finite support", "Poisson"],
    ),
    "improper-prior": (
        _regression_with(lambda: pyro.sample("w", dist.ImproperUniform(constraints.real, (), ()))),
        {},
        ["latent site 'w' has an improper prior (ImproperUniform)", "proper distribution"],
    ),
    "prior-with-infinite-bounds": (
        _regression_with(lambda: pyro.sample("w", dist.Uniform(-float("inf"), float("inf")))),
        {},
        ["latent site 'w'", "is NaN or inf", "proper prior with finite parameters"],
    ),
    "prior-with-infinite-scale": (
        _regression_with(lambda: pyro.sample("w", dist.Normal(0.0, float("inf")))),
        {},
        ["latent site 'w'", "is NaN or inf"],
    ),
    "vector-latent-without-to-event": (
        _regression_with(lambda: pyro.sample("w", dist.Normal(torch.zeros(2), 1.0))),
        {},
        ["site 'w' has batch shape (2,)", "no plate declares its dim -1", ".to_event(1)"],
    ),
}


@pytest.mark.parametrize("row", sorted(MODEL_ROWS))
def test_unsupported_models_are_refused_by_name(row, make_guide):
    model, options, patterns = MODEL_ROWS[row]
    guide = make_guide(model, **options)
    with pytest.raises(ValueError) as info:
        guide.posterior(torch.randn(6), torch.randn(6))
    message = str(info.value)
    for pattern in patterns:
        assert pattern in message
    assert "\n" not in message, message  # one line: no trace shapes appended by Pyro


def test_observations_not_passed_are_named(built):
    guide, x, _ = built
    with pytest.raises(ValueError, match="no observed site inside the data plate 'data'"):
        guide.posterior(x)
    # also with a custom featurize, which would otherwise leave y a latent drawn from its prior
    guide.featurize = lambda x, y=None: x
    with pytest.raises(ValueError, match="no observed site inside the data plate 'data'"):
        guide.posterior(x)


def _regression_without_tasks_plate(x, y=None):
    """A regression written for one dataset ``x: (N, 2)``: no tasks plate."""
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[-2]):
        return pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)


def _regression_sized_by_len(x, y=None):
    """The same, its data plate sized by ``len(x)``, which is ``T`` for a batch of tasks."""
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)


def _regression_not_vectorized(x, y=None):
    """``x @ w`` works for one draw of ``w`` but not for the guide's batch of draws."""
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)


def test_a_model_that_does_not_broadcast_over_draws_is_named(make_guide):
    x, y = torch.randn(6, 2), torch.randn(6)
    with pytest.raises(ValueError) as info:  # was a RuntimeError from inside a refinement step
        make_guide(_regression_not_vectorized).posterior(x, y)
    message = str(info.value)
    assert "the model failed when run at 4 draws of its latents at once" in message
    assert "(x * w).sum(-1) instead of x @ w" in message and "\n" not in message


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        (_regression_without_tasks_plate, "site 'y' has batch shape (3, 6)"),
        (_regression_sized_by_len, "Shape mismatch inside plate('data') at site y dim -1, 3 vs 6"),
    ],
    ids=["pooled-tasks", "plate-sized-by-len"],
)
def test_a_batch_of_tasks_for_a_model_without_the_tasks_plate_is_refused(
    model, pattern, make_guide
):
    x, y = torch.randn(3, 6, 2), torch.randn(3, 6)
    guide = make_guide(model)
    assert torch.isfinite(guide.posterior(x[0], y[0]).mean).all()  # one dataset: fine
    with pytest.raises(ValueError) as info:
        guide.posterior(x, y)  # today the 3 tasks were pooled into one dataset, or a traceback
    message = str(info.value)
    assert pattern in message and "pyro.plate('tasks', T, dim=-2)" in message
    assert "\n" not in message and "Trace Shapes" not in message


def test_fit_refuses_a_model_without_the_tasks_plate(make_guide):
    from iai_prob.inference import PriorPredictiveTasks, fit

    def covariates(num_tasks, num_points, generator):
        return (torch.randn(num_tasks, num_points, 2, generator=generator),)

    source = PriorPredictiveTasks(_regression_without_tasks_plate, covariates)
    guide = make_guide(_regression_without_tasks_plate)
    with pytest.raises(ValueError, match=r"site 'y' has batch shape \(1, \d+\).*'tasks'"):
        fit(guide, source, steps=1, tasks_per_step=2, num_points=(4, 4), progress=False)


def test_an_enumerated_discrete_local_latent_is_summed_out_exactly(make_guide):
    """The supported local latent: ``c_n ~ Bernoulli(0.3)``, enumerated, is marginalized
    in the log joint, ``log p(w) + Σ_n log Σ_c p(c) N(y_n | w x_n + c, 1)``."""
    model = _with_local(
        lambda: pyro.sample("c", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})
    )
    x, y = torch.randn(6), torch.randn(6)
    guide = make_guide(model)
    assert torch.isfinite(guide.posterior(x, y).mean).all()
    task = guide.prepare(x, y)
    w = torch.tensor([[[0.7]], [[-1.2]]])  # (S, T_flat, D) = (2, 1, 1)
    found = task.log_joint.per_particle(w, task.data)[:, 0]
    mixture = torch.stack(
        [
            torch.tensor(0.7).log() + dist.Normal(w[:, :, 0] * x, 1.0).log_prob(y),
            torch.tensor(0.3).log() + dist.Normal(w[:, :, 0] * x + 1, 1.0).log_prob(y),
        ]
    )
    expected = dist.Normal(0.0, 1.0).log_prob(w[:, 0, 0]) + mixture.logsumexp(0).sum(-1)
    torch.testing.assert_close(found, expected)


# ------------------------------------------------------------- checkpoint rows
def _model_with_sites(*sites):
    """A model whose global sites are ``sites`` = ``((name, size), …)``; every model made
    here has the same qualified name, as one edited user model would."""

    def model(x, y=None):
        total = 0.0
        for name, size in sites:
            value = pyro.sample(name, dist.Normal(0.0, 1.0).expand([size]).to_event(1))
            total = total + value.sum(-1, keepdim=True)
        with pyro.plate("data", len(x)):
            return pyro.sample("y", dist.Normal(total * x, 1.0), obs=y)

    return model


LAYOUT_ROWS = {
    "renamed-site": ((("weights", 2), ("s", 1)), ["missing site(s) ['w']", "unexpected site(s)"]),
    "missing-site": ((("w", 2),), ["missing site(s) ['s']"]),
    "another-latent-shape": ((("w", 3), ("s", 1)), ["site 'w' has shape [3], expected [2]"]),
}


@pytest.mark.parametrize("row", sorted(LAYOUT_ROWS))
def test_a_checkpoint_for_another_latent_layout_is_refused(row, make_guide, tmp_path):
    original = _model_with_sites(("w", 2), ("s", 1))
    guide = make_guide(original)
    x, y = torch.randn(8), torch.randn(8)
    guide(x, y)
    guide.save(tmp_path / "guide")
    sites, patterns = LAYOUT_ROWS[row]
    loaded = IterativeAmortizedGuide.load(tmp_path / "guide", _model_with_sites(*sites))
    with pytest.raises(ValueError, match="differ from those the guide was built for") as info:
        loaded.posterior(x, y)
    for pattern in patterns:
        assert pattern in str(info.value)
    # the same checkpoint loads and runs for the model it was trained for
    same = IterativeAmortizedGuide.load(tmp_path / "guide", original)
    same.convergence = guide.convergence  # a setting of the caller, not in the card
    torch.testing.assert_close(same.posterior(x, y).mean, guide.posterior(x, y).mean)


def test_a_checkpoint_for_another_model_is_refused(built, tmp_path):
    guide, _, _ = built
    guide.save(tmp_path / "guide")
    with pytest.raises(CheckpointError, match="trained for model"):
        IterativeAmortizedGuide.load(tmp_path / "guide", BetaBernoulli())


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        (_regression_without_tasks_plate, r"global site 'w' has shape \(2,\) for a batch of 3"),
        (_regression_sized_by_len, r"plate\('data'\).*Arguments: x: float32 tensor of shape"),
    ],
    ids=["no-tasks-plate", "data-plate-sized-by-len"],
)
def test_prior_predictive_tasks_name_what_the_model_lacks(model, pattern):
    from iai_prob.inference import PriorPredictiveTasks

    def covariates(num_tasks, num_points, generator):
        return (torch.randn(num_tasks, num_points, 2, generator=generator),)

    source = PriorPredictiveTasks(model, covariates)
    with pytest.raises(ValueError, match=pattern) as error:
        source.sample(3, 5, torch.Generator().manual_seed(0))
    assert "Trace Shapes" not in str(error.value)


def _batched_regression_with(prior):
    """A regression over a batch of tasks ``x: (T, N, 2)`` (or one dataset ``(N, 2)``)
    whose weight ``w`` has the prior ``prior()``."""

    from contextlib import nullcontext

    def model(x, y=None):
        with pyro.plate("tasks", x.shape[0], dim=-2) if x.dim() == 3 else nullcontext():
            w = pyro.sample("w", prior())
            with pyro.plate("data", x.shape[-2], dim=-1):
                return pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)

    return model


@pytest.mark.parametrize(
    ("prior", "pattern"),
    [
        (
            lambda: dist.ImproperUniform(constraints.real, (), (2,)),
            "latent site 'w' has an improper prior (ImproperUniform); the guide samples and "
            "scores the prior, so give 'w' a proper distribution",
        ),
        (
            lambda: dist.Uniform(-float("inf"), float("inf")).expand([2]).to_event(1),
            "latent site 'w': a draw from its prior",
        ),
    ],
    ids=["improper-uniform", "infinite-bounds"],
)
def test_prior_predictive_tasks_refuse_an_improper_prior_as_the_guide_does(
    prior, pattern, make_guide
):
    from iai_prob.inference import PriorPredictiveTasks

    model = _batched_regression_with(prior)

    def covariates(num_tasks, num_points, generator):
        return (torch.randn(num_tasks, num_points, 2, generator=generator),)

    with pytest.raises(ValueError) as error:  # was "the model failed on the data it was given"
        PriorPredictiveTasks(model, covariates).sample(3, 5, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError) as from_the_guide:
        make_guide(model).posterior(torch.randn(5, 2), torch.randn(5))
    message = str(error.value)
    assert pattern in message and "\n" not in message
    # the same words as the guide's, but for the prior's batch shape (T tasks, or one)
    assert re.sub(r"its prior .* is NaN", "", message) == re.sub(
        r"its prior .* is NaN", "", str(from_the_guide.value)
    )
