"""Task families: models with fast simulators and, where conjugate, exact posteriors.

Every family follows :class:`~iai_prob.models.base.TaskFamily` and is written once for
both backends: it runs under Pyro by default and under NumPyro once bound with
``family.on("numpyro")`` (:mod:`iai_prob.models.backend`). :data:`FAMILIES` holds the
synthetic ones; the real-data tasks (:mod:`.digits`) and the explicit-regime families
with learned decoders (:mod:`.neural_process`, :mod:`.neural_statistician`) are built
directly.
"""

from iai_prob.models.base import DATA_PLATE, TASKS_PLATE, LatentSite, TaskFamily
from iai_prob.models.beta_bernoulli import BetaBernoulli
from iai_prob.models.dirichlet_categorical import DirichletCategorical
from iai_prob.models.gaussian_mixture import GaussianMixture
from iai_prob.models.generative import GenerativeTaskFamily
from iai_prob.models.linear_regression import LinearRegression
from iai_prob.models.linear_regression_unknown_noise import LinearRegressionUnknownNoise
from iai_prob.models.logistic_regression import LogisticRegression
from iai_prob.models.mlp_classification import MLPClassification
from iai_prob.models.mlp_regression import MLPRegression

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
"""Task families by name (what ``iai train NAME`` and checkpoint cards use)."""


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
    "TaskFamily",
    "get_family",
]
