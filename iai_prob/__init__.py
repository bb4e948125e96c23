"""iai_prob: iterative amortized inference for Pyro (and NumPyro).

Meta-train a guide across many tasks, then get the posterior of a new dataset
in milliseconds and keep refining it mini-batch by mini-batch (Mittal,
Mahajan, Lajoie, Pezeshki 2025, arXiv:2510.11471). ``import iai_prob`` never
imports JAX; the NumPyro port lives in :mod:`iai_prob.numpyro`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
