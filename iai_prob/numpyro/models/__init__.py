"""Task families as NumPyro models (same site and plate names as :mod:`iai_prob.models`)."""

from iai_prob.numpyro.models.base import DATA_PLATE, TASKS_PLATE, LatentSite, TaskFamily
from iai_prob.numpyro.models.gaussian_mixture import GaussianMixture
from iai_prob.numpyro.models.linear_regression import LinearRegression
from iai_prob.numpyro.models.logistic_regression import LogisticRegression

FAMILIES = {cls.name: cls for cls in (LinearRegression, LogisticRegression, GaussianMixture)}
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
    "GaussianMixture",
    "LatentSite",
    "LinearRegression",
    "LogisticRegression",
    "TaskFamily",
    "get_family",
]
