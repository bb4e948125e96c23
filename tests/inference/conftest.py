"""Shared helpers and fixtures of the inference tests.

Every test runs seeded, single-threaded (two xdist workers share two cores) and with
an empty Pyro param store. Guides use tiny DeepSets encoders unless the encoder is
what a test is about. The helpers reach the tests as fixtures (``make_guide``,
``make_family``, ``simulate``, ``dataset``, ``read_task``) so that nothing imports this file.
"""

from __future__ import annotations

import pytest
import torch
from pyro import poutine

from iai_prob.inference import IterativeAmortizedGuide
from iai_prob.inference.log_joint import LogJoint
from iai_prob.inference.sites import discover_layout
from iai_prob.inference.task_data import read_task_data
from iai_prob.models import (
    BetaBernoulli,
    DirichletCategorical,
    GaussianMixture,
    LinearRegression,
    LogisticRegression,
)

ENCODER_OPTIONS = {"embed_dim": 16, "hidden_dim": 32}

# Small configurations of the families the inference tests use.
FAMILY_FACTORIES = {
    "linear_regression": lambda: LinearRegression(dim=2, noise_scale=0.5),
    "logistic_regression": lambda: LogisticRegression(dim=2),
    "beta_bernoulli": lambda: BetaBernoulli(concentration1=2.0, concentration0=3.0),
    "dirichlet_categorical": lambda: DirichletCategorical(num_categories=4, concentration=1.5),
    "gaussian_mixture": lambda: GaussianMixture(dim=2, num_components=2),
}


def make_family(name: str):
    return FAMILY_FACTORIES[name]()


def make_guide(model, **overrides) -> IterativeAmortizedGuide:
    """A guide with a tiny DeepSets encoder; ``overrides`` replace any option.

    Its answers are the learned refinement's ``λ_K`` (``convergence=None``): these tests
    check the learned machinery; ``test_convergence.py`` checks the converged default.
    """
    options = {
        "encoder": "deep_sets",
        "encoder_options": ENCODER_OPTIONS,
        "batch_size": 16,
        "convergence": None,
        **overrides,
    }
    return IterativeAmortizedGuide(model, **options)


def simulate(family, num_tasks: int, num_points: int, seed: int = 0):
    """``family.sample`` with a seeded generator: ``(theta, x, y)``, batched."""
    return family.sample(num_tasks, num_points, generator=torch.Generator().manual_seed(seed))


def dataset(family, num_tasks: int, num_points: int, batched: bool, seed: int = 0, task: int = 0):
    """Simulated ``(x, y)``: all ``num_tasks`` tasks, or only task ``task`` unbatched."""
    _, x, y = simulate(family, num_tasks, num_points, seed)
    return (x, y) if batched else (x[task], y[task])


def read_task(model, *args, **kwargs):
    """``(layout, data, log_joint)`` of ``model`` on its arguments, read from one trace."""
    with poutine.block():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    layout = discover_layout(trace)
    data = read_task_data(trace, args, kwargs, data_plate="data", tasks_plate="tasks")
    enumerate_ = any(
        site["type"] == "sample" and site["infer"].get("enumerate") == "parallel"
        for site in trace.nodes.values()
    )
    return layout, data, LogJoint(model, layout, "data", enumerate_)


@pytest.fixture(name="make_family")
def _make_family_fixture():
    return make_family


@pytest.fixture(name="make_guide")
def _make_guide_fixture():
    return make_guide


@pytest.fixture(name="simulate")
def _simulate_fixture():
    return simulate


@pytest.fixture(name="dataset")
def _dataset_fixture():
    return dataset


@pytest.fixture(name="read_task")
def _read_task_fixture():
    return read_task


@pytest.fixture
def linreg() -> LinearRegression:
    return make_family("linear_regression")
