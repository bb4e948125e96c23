"""What a task family asks of its backend, and the lookup by name.

A task family (:mod:`iai_prob.models`) is written once. Its model, simulator and exact
posterior call the family's backend object (``family.ppl``) for exactly what Pyro and
NumPyro spell differently:

* the model's primitives: ``sample``, ``plate``, the distributions and constraints
  modules, ``biject_to`` and ``IndependentTransform`` (read by the shared latent layout,
  :mod:`iai_prob.latent_layout`), ``Vindex``, a Bernoulli on logits, and constants in
  the data's dtype and device (``constant``, ``full``);
* the simulator's random draws: ``simulation_arguments`` wraps a ``torch.Generator``
  (Pyro) or a JAX PRNG key (NumPyro) in an object with ``normal``, ``gamma``, ``beta``,
  ``dirichlet``, ``bernoulli`` and ``categorical``; the PyTorch draws are the calls the
  families made before they were written once, in the same order, so a seed gives the
  same tasks as before; the JAX draws split the key once per draw;
* the array operations whose names or signatures differ between PyTorch and
  ``jax.numpy``: ``asarray``, ``as_float``, ``einsum``, ``concatenate``, ``eye``,
  ``cholesky``, ``cholesky_solve``, ``inverse_from_cholesky``, ``solve``,
  ``log_det_from_cholesky``, ``lgamma``, ``one_hot``, ``sigmoid``, ``tanh``, ``sqrt``,
  ``log``, ``arange``, ``empty_covariates``, ``require`` (a value check that is skipped
  on JAX tracers) and ``linear_predictor``.

Arithmetic both accept (``+``, ``*``, ``**``, ``.sum(-1)``, ``.shape``, ``.ndim``,
indexing, ``[..., None]``) is written plainly.

Why an explicit backend object. pyro-api's dispatch (``pyro_backend("numpy")``) switches
a process-wide setting, so a family's model would run under whichever backend the caller
last entered, and its ``ops`` are the raw ``torch`` / ``jax.numpy`` modules, which still
differ in the calls above. An array-namespace library (array-api-compat) would add a
dependency and cover about half of them: the array API has no ``einsum``, ``lgamma``,
Cholesky solve or random draws, and no distributions. A family bound to a backend
(:meth:`~iai_prob.models.base.TaskFamily.on`) names its backend once, runs the same code
under both, and imports neither framework until it is used: the NumPyro side still
imports no torch.
"""

from __future__ import annotations

import importlib

__all__ = ["BACKENDS", "get_backend"]

BACKENDS = {
    "pyro": "iai_prob.models.pyro_backend",
    "numpyro": "iai_prob.models.numpyro_backend",
}
"""Backend names and the modules that implement them (each exports ``BACKEND``)."""

_LOADED: dict[str, object] = {}


def get_backend(name: str):
    """The backend object named ``name`` (``"pyro"`` or ``"numpyro"``), imported on first use."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {sorted(BACKENDS)}")
    if name not in _LOADED:
        _LOADED[name] = importlib.import_module(BACKENDS[name]).BACKEND
    return _LOADED[name]
