"""ArviZ ``InferenceData`` (or, with ArviZ ≥ 1.0, its ``xarray.DataTree``) from a posterior.

The groups follow ArviZ's schema (Kumar, Carroll, Hartikainen, Martin 2019):

* ``posterior``: draws ``θ_s = T(z_s)``, ``z_s ~ q(z | D)``, each global site with dims
  ``(chain, draw, [tasks], site_dim_0, …)``; an amortized posterior gives independent
  draws, stored as ``num_chains`` chains of ``num_samples / num_chains`` draws;
* ``posterior_predictive``: ``y_rep ~ p(y | θ_s)`` for each observed site;
* ``log_likelihood``: ``log p(y_n | θ_s)`` per observation, so that ``az.loo`` and
  ``az.waic`` work (PSIS-LOO: Vehtari, Gelman, Gabry 2017);
* ``observed_data`` and ``constant_data``: the observations and the model's other tensor
  arguments;
* ``sample_stats``: ``log_importance_weight = log p(D, θ_s) − log q(θ_s)`` (in the
  unconstrained space, where both densities are taken), ``lp = log p(z_s, D)`` and
  ``log_q``; :func:`~iai_prob.diagnostics.psis_khat` reads the first.

Observation dims are the model's plate names (``"data"``, ``"tasks"``); event dims are
``site_dim_i``. The sample dims of the posterior are ``chain`` and ``draw``.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from iai_prob.diagnostics.adapter import approximate_posterior
from iai_prob.diagnostics.posterior_source import NamedArray

__all__ = ["arviz_major_version", "assemble", "to_inference_data"]


def arviz_major_version() -> int:
    """The installed ArviZ's major version (0 for 0.x, 1 for the DataTree-based 1.x)."""
    import arviz

    return int(arviz.__version__.split(".")[0])


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)


def _sampled(named: NamedArray, chains: int) -> xr.DataArray:
    """``(S, …)`` → ``(chain, draw, …)``."""
    value = _numpy(named.value)
    value = value.reshape(chains, value.shape[0] // chains, *value.shape[1:])
    return xr.DataArray(value, dims=("chain", "draw", *named.dims))


def _dataset(variables: dict[str, xr.DataArray], attrs: dict) -> xr.Dataset:
    dataset = xr.Dataset(variables, attrs=attrs)
    return dataset.assign_coords({dim: np.arange(size) for dim, size in dataset.sizes.items()})


def assemble(groups: dict[str, xr.Dataset], *, datatree: bool | None = None):
    """``az.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ ≥ 1.0) of ``groups``.

    ``datatree=None`` picks by the installed ArviZ; ``True``/``False`` forces one.
    """
    if datatree is None:
        datatree = arviz_major_version() >= 1
    if datatree:
        return xr.DataTree.from_dict({f"/{name}": group for name, group in groups.items()})
    import arviz as az

    return az.InferenceData(**groups)


@torch.no_grad()
def to_inference_data(
    guide,
    model=None,
    *args,
    num_samples: int = 1000,
    num_chains: int = 1,
    seed: int = 0,
    posterior_predictive: bool = True,
    log_likelihood: bool = True,
    datatree: bool | None = None,
    **kwargs,
):
    """Draw from the guide's posterior for the data ``*args, **kwargs`` and package it.

    :param guide: an :class:`~iai_prob.inference.IterativeAmortizedGuide`, a callable
        ``(*args, **kwargs) -> distribution`` over the unconstrained latents (see
        :func:`~iai_prob.diagnostics.approximate_posterior`), or an already adapted
        :class:`~iai_prob.diagnostics.ApproximatePosterior` (then ``args`` are ignored).
    :param model: the Pyro model or task family (``None``: the guide's own model).
    :param int num_samples: posterior draws in total (split evenly over ``num_chains``).
    :param int num_chains: size of the ``chain`` dim; the draws are independent, so chains
        only matter to tools that expect several.
    :param int seed: seeds the draws and the posterior predictive.
    :param bool posterior_predictive: add the ``posterior_predictive`` group.
    :param bool log_likelihood: add the ``log_likelihood`` group.
    :param datatree: ``None`` (by the installed ArviZ), ``True`` for an ``xarray.DataTree``
        (ArviZ ≥ 1.0), ``False`` for ``az.InferenceData`` (ArviZ 0.x).
    :returns: ``az.InferenceData`` or ``xarray.DataTree``.
    """
    if int(num_chains) != num_chains or num_chains < 1:
        raise ValueError(f"num_chains must be a positive integer, got {num_chains!r}")
    if int(num_samples) != num_samples or num_samples < 2 or num_samples % num_chains:
        raise ValueError(
            f"num_samples must be an integer ≥ 2 divisible by num_chains={num_chains}, "
            f"got {num_samples!r}"
        )
    source = guide
    if not hasattr(guide, "pointwise_log_likelihood"):
        source = approximate_posterior(guide, model, *args, **kwargs)
    draws = source.draw(num_samples, seed=seed)
    squeeze = not source.batched  # one dataset: drop the task axis of (S, T, …)

    def per_task(value: torch.Tensor) -> torch.Tensor:
        return value[:, 0] if squeeze else value

    site_dims = source.site_dims()
    posterior = {
        name: _sampled(NamedArray(per_task(value), site_dims[name]), num_chains)
        for name, value in draws.values.items()
    }
    task_dims = () if squeeze else (site_dims[next(iter(site_dims))][0],)
    stats = {
        "log_importance_weight": draws.log_weights,
        "lp": draws.log_joint,
        "log_q": draws.log_q,
    }
    attrs = {"inference_library": "iai_prob", "inference_method": "iterative amortized inference"}
    groups = {
        "posterior": _dataset(posterior, attrs),
        "sample_stats": _dataset(
            {
                name: _sampled(NamedArray(per_task(value), task_dims), num_chains)
                for name, value in stats.items()
            },
            attrs,
        ),
    }
    if posterior_predictive:
        replicated = source.posterior_predictive(draws.z, seed=seed + 1)
        groups["posterior_predictive"] = _dataset(
            {name: _sampled(named, num_chains) for name, named in replicated.items()}, attrs
        )
    if log_likelihood:
        pointwise = source.pointwise_log_likelihood(draws.z)
        groups["log_likelihood"] = _dataset(
            {name: _sampled(named, num_chains) for name, named in pointwise.items()}, attrs
        )
    groups["observed_data"] = _dataset(
        {n: xr.DataArray(_numpy(v.value), dims=v.dims) for n, v in source.observed().items()},
        attrs,
    )
    constant = source.constant()
    if constant:
        groups["constant_data"] = _dataset(
            {n: xr.DataArray(_numpy(v.value), dims=v.dims) for n, v in constant.items()}, attrs
        )
    return assemble(groups, datatree=datatree)
