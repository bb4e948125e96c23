"""Does the model fit the data? Posterior predictive p-values and PSIS-LOO, per dataset.

PSIS k̂ of the guide's importance weights says whether ``q`` matches the model's posterior
``p(θ | D)``; it says nothing about whether the model can describe ``D`` at all. A fixed
noise scale far below the data's noise, or data in other units than the training tasks,
give a good k̂ and a useless posterior. Two checks look at the model instead:

* posterior predictive p-values (Gelman, Meng, Stern 1996; BDA3 §6.3): for a statistic
  ``T`` of the observations, ``p_T = P(T(y_rep) > T(y) | D) + ½ P(T(y_rep) = T(y) | D)``
  over the replicated data ``y_rep ~ p(y | θ_s)``, ``θ_s ~ q``. ``T`` is the mean and the
  standard deviation of each observed site; a p-value outside ``[0.01, 0.99]`` means the
  model does not reproduce that feature of the data (posterior predictive p-values of
  fitted statistics cluster near ½ when the model is right: on 64 datasets drawn from
  each shipped guide's family, at most 1 in 64 fell outside);
* PSIS-LOO (Vehtari, Gelman, Gabry 2017): the effective number of parameters ``p_loo``
  and the Pareto ``k`` of each observation's leave-one-out weights. ``p_loo`` above the
  number of parameters ``D`` signals a badly misspecified model (the ``loo`` package's
  glossary), but only once ``N ≥ 5 D``: with fewer observations even the true model
  gives large ``p_loo`` and ``k``. Estimated from the guide's draws, ``p_loo`` of
  well-specified data reached 1.6 ``D`` (linear and logistic regression, N = 50 to 200),
  and 3.3 ``D`` or more for ``y`` doubled or the noise tripled, so the check fails
  above 2 ``D``. A Pareto ``k > 0.7`` makes that observation's LOO term unreliable
  (reported, not failed: small datasets have a few such points whatever the model).

A batch of datasets (an InferenceData with a tasks dimension) gets every number per
dataset.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "K_THRESHOLD",
    "POINTS_PER_PARAMETER",
    "PPC_BOUNDS",
    "P_LOO_FACTOR",
    "ModelFit",
    "model_fit",
    "predictive_pvalues",
]

PPC_BOUNDS = (0.005, 0.995)
"""Posterior predictive p-values outside this interval fail the check."""
K_THRESHOLD = 0.7
"""Pareto k above which an observation's PSIS-LOO estimate is unreliable."""
P_LOO_FACTOR = 2.0
"""``p_loo`` above this many times the number of parameters fails the check."""
POINTS_PER_PARAMETER = 5
"""``p_loo`` is judged only with at least this many observations per parameter."""
_STATISTICS = {"mean": np.mean, "sd": np.std}
_STATISTICS_OF_VALID = {"mean": np.nanmean, "sd": np.nanstd}  # padding is NaN


@dataclass
class ModelFit:
    """Model-fit checks of :func:`model_fit`; every array has one entry per dataset.

    :ivar labels: the datasets' names (``["0"]`` style indices when unnamed).
    :ivar pvalues: ``"sd(y)"`` → posterior predictive p-value of that statistic.
    :ivar loo: observed site → ``{"elpd_loo", "se", "p_loo", "bad_k"}`` (``bad_k``: the
        share of observations with Pareto ``k > 0.7``).
    :ivar num_params: the model's number of (unconstrained) latent parameters.
    :ivar num_points: observations per dataset.
    """

    labels: list[str]
    num_params: int
    num_points: int
    pvalues: dict[str, np.ndarray] = field(default_factory=dict)
    loo: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def ppc_ok(self) -> np.ndarray:
        """Per dataset: every p-value within :data:`PPC_BOUNDS`."""
        low, high = PPC_BOUNDS
        ok = np.ones(len(self.labels), dtype=bool)
        for values in self.pvalues.values():
            ok &= (values >= low) & (values <= high)
        return ok

    @property
    def loo_judged(self) -> bool:
        """Whether there are enough observations per parameter to read ``p_loo``."""
        return self.num_points >= POINTS_PER_PARAMETER * self.num_params

    @property
    def loo_ok(self) -> np.ndarray:
        """Per dataset: ``p_loo ≤ 2 num_params`` for every site (or too few observations
        to tell)."""
        ok = np.ones(len(self.labels), dtype=bool)
        if self.loo_judged:
            for result in self.loo.values():
                ok &= result["p_loo"] <= P_LOO_FACTOR * self.num_params
        return ok

    def ppc_text(self) -> str:
        """One sentence on the posterior predictive check."""
        low, high = PPC_BOUNDS
        names = ", ".join(self.pvalues)
        if len(self.labels) == 1:
            values = ", ".join(f"{name} {p[0]:.3f}" for name, p in self.pvalues.items())
            if self.ppc_ok[0]:
                return (
                    f"Posterior predictive check: p-values {values}, within {low}–{high}: the "
                    "model reproduces these features of the data."
                )
            return (
                f"Posterior predictive check: p-values {values}; outside {low}–{high} the "
                "model does not reproduce the data (misspecified for these data)."
            )
        failed = [label for label, ok in zip(self.labels, self.ppc_ok, strict=True) if not ok]
        text = (
            f"Posterior predictive check: {len(self.labels) - len(failed)} of "
            f"{len(self.labels)} datasets with every p-value ({names}) within {low}–{high}"
        )
        return text + (f"; the model does not reproduce {_listed(failed)}." if failed else ".")

    def loo_text(self) -> str:
        """One sentence on PSIS-LOO."""
        parts = []
        for site, result in self.loo.items():
            p_loo, bad_k = result["p_loo"], result["bad_k"]
            if len(self.labels) == 1:
                parts.append(
                    f"PSIS-LOO ({site}): elpd_loo = {result['elpd_loo'][0]:.1f} (se "
                    f"{result['se'][0]:.1f}), p_loo = {p_loo[0]:.1f} for {self.num_params} "
                    f"parameters; {bad_k[0]:.1%} of observations with Pareto k > {K_THRESHOLD}"
                )
            else:
                parts.append(
                    f"PSIS-LOO ({site}) per dataset: p_loo median {np.median(p_loo):.1f} (max "
                    f"{p_loo.max():.1f}) for {self.num_params} parameters; a Pareto k > "
                    f"{K_THRESHOLD} in {np.mean(bad_k > 0):.0%} of datasets"
                )
        text = "; ".join(parts)
        if not self.loo_judged:
            return (
                f"{text}. With N = {self.num_points} < {POINTS_PER_PARAMETER} × "
                f"{self.num_params} observations per dataset, p_loo and k are large even "
                "for the true model: not judged."
            )
        failed = [label for label, ok in zip(self.labels, self.loo_ok, strict=True) if not ok]
        if not failed:
            return (
                f"{text}. p_loo ≤ {P_LOO_FACTOR:g} × the number of parameters: no sign of "
                "misspecification."
            )
        which = "" if len(self.labels) == 1 else f" for {_listed(failed)}"
        return (
            f"{text}. p_loo above {P_LOO_FACTOR:g} × the number of parameters{which}: the "
            "model is misspecified for these data."
        )


def _listed(labels: list[str], limit: int = 8) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def _pvalue(replicated: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Mid-p ``P(T_rep > T) + ½ P(T_rep = T)`` over the leading (draw) axis."""
    return (replicated > observed).mean(0) + 0.5 * (replicated == observed).mean(0)


def predictive_pvalues(replicated, observed, site: str, valid=None) -> dict[str, np.ndarray]:
    """Posterior predictive p-values of the mean and sd of one observed site, per dataset.

    :param replicated: ``y_rep`` draws-first, ``(S, T, n)``: ``S`` draws for ``T``
        datasets of ``n`` values each.
    :param observed: ``y``, ``(T, n)``.
    :param valid: ``(T, n)`` booleans, ``False`` on the padding of datasets of unequal
        sizes stacked together (left out of every statistic); ``None``: all valid.
    :returns: ``{"mean(site)": p, "sd(site)": p}``, each of shape ``(T,)``.
    """
    replicated, observed = np.asarray(replicated), np.asarray(observed)
    statistics = _STATISTICS
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        replicated = np.where(valid, replicated, np.nan)
        observed = np.where(valid, observed, np.nan)
        statistics = _STATISTICS_OF_VALID
    return {
        f"{name}({site})": _pvalue(statistic(replicated, axis=-1), statistic(observed, axis=-1))
        for name, statistic in statistics.items()
    }


def _draws_first(array, tasks_dim: str | None) -> np.ndarray:
    """``(draws, tasks, rest)`` of a (chain, draw, [tasks], …) DataArray."""
    array = array.stack(sample=("chain", "draw"))
    lead = ["sample"] + ([tasks_dim] if tasks_dim else [])
    array = array.transpose(*lead, ...)
    values = array.values
    tasks = values.shape[1] if tasks_dim else 1
    return values.reshape(values.shape[0], tasks, -1)


def model_fit(idata, num_params: int, *, tasks_dim: str | None = None) -> ModelFit:
    """Posterior predictive p-values and PSIS-LOO of ``idata`` (see the module docstring).

    :param idata: an InferenceData with ``posterior_predictive``, ``log_likelihood`` and
        ``observed_data`` groups (:func:`~iai_prob.diagnostics.to_inference_data`).
    :param int num_params: the model's number of latent parameters (``p_loo`` above it
        signals misspecification).
    :param tasks_dim: the dimension that indexes a batch of datasets (``None``: one
        dataset); its coordinates name the datasets.
    """
    import arviz as az

    if tasks_dim is None:
        labels = ["0"]
    else:
        labels = [str(value) for value in idata.observed_data[tasks_dim].values]
    first = next(iter(idata.log_likelihood.data_vars.values()))
    num_points = first.size // (first.sizes["chain"] * first.sizes["draw"] * len(labels))
    fit = ModelFit(labels, int(num_params), num_points)
    for site in idata.observed_data.data_vars:
        observed = idata.observed_data[site].expand_dims(chain=[0], draw=[0])
        observed = _draws_first(observed, tasks_dim)[0]
        replicated = _draws_first(idata.posterior_predictive[site], tasks_dim)
        fit.pvalues.update(predictive_pvalues(replicated, observed, site))
    datasets = [idata]
    if tasks_dim is not None:
        datasets = [idata.isel(**{tasks_dim: i}) for i in range(len(labels))]
    for site in idata.log_likelihood.data_vars:
        results = []
        for dataset in datasets:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loo = az.loo(dataset, pointwise=True, var_name=site)
            results.append(
                (
                    float(loo.elpd_loo),
                    float(loo.se),
                    float(loo.p_loo),
                    float(np.mean(loo.pareto_k.values > K_THRESHOLD)),
                )
            )
        columns = np.array(results).T
        fit.loo[site] = dict(zip(("elpd_loo", "se", "p_loo", "bad_k"), columns, strict=True))
    return fit
