"""Task families as NumPyro models (same site and plate names as :mod:`iai_prob.models`).

Every parametric family of the PyTorch side has a twin here; the real-data tasks
(:mod:`iai_prob.models.digits`) and the explicit-regime families with learned decoders
(neural process, neural statistician) are PyTorch-only.
"""

from iai_prob.numpyro.models.base import DATA_PLATE, TASKS_PLATE, LatentSite, TaskFamily
from iai_prob.numpyro.models.beta_bernoulli import BetaBernoulli
from iai_prob.numpyro.models.dirichlet_categorical import DirichletCategorical
from iai_prob.numpyro.models.gaussian_mixture import GaussianMixture
from iai_prob.numpyro.models.generative import GenerativeTaskFamily
from iai_prob.numpyro.models.linear_regression import LinearRegression
from iai_prob.numpyro.models.linear_regression_unknown_noise import (
    LinearRegressionUnknownNoise,
    NormalInverseGamma,
)
from iai_prob.numpyro.models.logistic_regression import LogisticRegression
from iai_prob.numpyro.models.mlp_classification import MLPClassification
from iai_prob.numpyro.models.mlp_regression import MLPRegression

FAMILIES = {
    cls.name: cls
    for cls in (
        LinearRegression,
        LinearRegressionUnknownNoise,
        LogisticRegression,
        GaussianMixture,
        MLPRegression,
        MLPClassification,
        BetaBernoulli,
        DirichletCategorical,
    )
}
"""The NumPyro task families by name (the same names as :data:`iai_prob.models.FAMILIES`)."""


def get_family(name: str, **config) -> TaskFamily:
    """Build the task family registered under ``name`` with constructor ``config``."""
    if name not in FAMILIES:
        raise ValueError(f"unknown task family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name](**config)


__all__ = [
    "DATA_PLATE",
    "FAMILIES",
    "TASKS_PLATE",
    "BetaBernoulli",
    "DirichletCategorical",
    "GaussianMixture",
    "GenerativeTaskFamily",
    "LatentSite",
    "LinearRegression",
    "LinearRegressionUnknownNoise",
    "LogisticRegression",
    "MLPClassification",
    "MLPRegression",
    "NormalInverseGamma",
    "TaskFamily",
    "get_family",
]
