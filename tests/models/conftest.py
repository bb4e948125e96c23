"""Shared tables and fixtures for the task-family tests.

The tests in this folder are parametrized over the families of
:data:`iai_prob.models.FAMILIES` through the tables and fixtures below, so that
adding a family means adding one row to each table rather than copying tests.
"""

from __future__ import annotations

import pytest

from iai_prob.models import FAMILIES, TaskFamily, get_family
from iai_prob.models.generative import GenerativeTaskFamily

# Small configurations that keep NUTS and the Monte Carlo checks fast.
# LinearRegressionUnknownNoise uses a0 = 6 so that σ² has a finite 4th moment and
# the moment checks' standard errors (which need 4th moments of σ²) exist.
FAMILY_CONFIGS: dict[str, dict] = {
    "linear_regression": {"dim": 2, "noise_scale": 0.5, "prior_scale": 1.0},
    "linear_regression_unknown_noise": {
        "dim": 2,
        "prior_scale": 1.0,
        "noise_concentration": 6.0,
        "noise_rate": 1.0,
    },
    "logistic_regression": {"dim": 2, "prior_scale": 1.5},
    "gaussian_mixture": {"dim": 2, "num_components": 3, "noise_scale": 0.5},
    "mlp_regression": {"dim": 2, "hidden": 4, "noise_scale": 0.3},
    "mlp_classification": {"dim": 2, "hidden": 4, "logit_scale": 2.0},
    "beta_bernoulli": {"concentration1": 2.0, "concentration0": 3.0},
    "dirichlet_categorical": {"num_categories": 3, "concentration": 1.5},
}

# Overrides that a prior-predictive moment check must tell apart from FAMILY_CONFIGS:
# the observation noise scale doubled where there is one, otherwise a prior parameter.
PERTURBATIONS: dict[str, dict] = {
    "linear_regression": {"noise_scale": 1.0},
    "linear_regression_unknown_noise": {"noise_rate": 4.0},  # σ² ~ 4 × (prior draw)
    "logistic_regression": {"prior_scale": 3.0},
    "gaussian_mixture": {"noise_scale": 1.0},
    "mlp_regression": {"noise_scale": 0.6},
    "mlp_classification": {"prior_scale": 3.0},
    "beta_bernoulli": {"concentration1": 4.0},
    "dirichlet_categorical": {"concentration": 3.0},
}

# Constructor arguments that must raise a ValueError naming the argument.
BAD_ARGUMENTS: dict[str, list[dict]] = {
    "linear_regression": [{"dim": 0}, {"noise_scale": -1.0}, {"prior_scale": 0.0}],
    "linear_regression_unknown_noise": [
        {"dim": 0},
        {"dim": 2.5},
        {"prior_scale": -1.0},
        {"noise_concentration": 0.0},
        {"noise_rate": float("inf")},
    ],
    "logistic_regression": [{"dim": 0}, {"dim": True}, {"prior_scale": float("nan")}],
    "gaussian_mixture": [
        {"dim": 0},
        {"num_components": 0},
        {"prior_scale": 0.0},
        {"noise_scale": -1.0},
        {"concentration": 0.0},
    ],
    "mlp_regression": [{"dim": 0}, {"hidden": 0}, {"prior_scale": -1.0}, {"noise_scale": -1.0}],
    "mlp_classification": [{"dim": 0}, {"hidden": 0}, {"logit_scale": 0.0}],
    "beta_bernoulli": [{"concentration1": 0.0}, {"concentration0": -1.0}],
    "dirichlet_categorical": [{"num_categories": 0}, {"concentration": 0.0}],
}

FAMILY_NAMES = sorted(FAMILIES)
CONJUGATE_NAMES = [name for name in FAMILY_NAMES if FAMILIES[name].has_exact_posterior]
GENERATIVE_NAMES = [
    name for name in FAMILY_NAMES if issubclass(FAMILIES[name], GenerativeTaskFamily)
]


def make_family(name: str, **overrides) -> TaskFamily:
    """The test configuration of family ``name``, with ``overrides`` applied."""
    return get_family(name, **{**FAMILY_CONFIGS[name], **overrides})


def pytest_generate_tests(metafunc):
    """Give ``bad_argument`` one ``(family name, kwargs)`` case per row of BAD_ARGUMENTS."""
    if "bad_argument" in metafunc.fixturenames:
        cases = [(name, kwargs) for name in FAMILY_NAMES for kwargs in BAD_ARGUMENTS[name]]
        ids = [f"{name}-{','.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in cases]
        metafunc.parametrize("bad_argument", cases, ids=ids)


@pytest.fixture(params=FAMILY_NAMES)
def family(request) -> TaskFamily:
    return make_family(request.param)


@pytest.fixture
def perturbed_family(family) -> TaskFamily:
    """``family`` with the PERTURBATIONS row applied."""
    return make_family(family.name, **PERTURBATIONS[family.name])


@pytest.fixture(params=CONJUGATE_NAMES)
def conjugate_family(request) -> TaskFamily:
    return make_family(request.param)


@pytest.fixture(params=GENERATIVE_NAMES)
def generative_family(request) -> TaskFamily:
    return make_family(request.param)


@pytest.fixture
def gaussian_mixture() -> TaskFamily:
    return make_family("gaussian_mixture")
