"""The amortized posterior of one dataset against NUTS: moments table, C2ST, pair plots.

For every scalar coordinate ``j`` of the global latents (constrained values) the table
gives the means and standard deviations under the guide ``q`` and under NUTS, the
standardized mean difference ``(mean_q − mean_NUTS) / sd_NUTS`` and the ratio
``sd_q / sd_NUTS`` (over-confidence shows as a ratio below 1). The classifier two-sample
test (C2ST; Lopez-Paz and Oquab 2017) measures the joint discrepancy: the cross-validated
accuracy of a classifier telling guide draws from NUTS draws, 0.5 when indistinguishable
and 1.0 when disjoint. NUTS draws carry Monte Carlo error: with an effective sample size
near ``S`` a standardized difference of about ``1/√S`` is noise.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from iai_prob.diagnostics.adapter import ApproximatePosterior, approximate_posterior
from iai_prob.diagnostics.nuts import NutsReference, pyro_nuts

__all__ = ["NutsComparison", "c2st_accuracy", "compare_with_nuts", "flatten_draws"]


def c2st_accuracy(first: np.ndarray, second: np.ndarray, *, seed: int = 0, folds: int = 5):
    """Classifier two-sample test: cross-validated accuracy of telling the samples apart.

    A two-hidden-layer MLP (32 units, early stopping) on standardized draws (Lopez-Paz
    and Oquab 2017); 0.5 means indistinguishable, 1.0 fully separable.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.concatenate([first, second]).reshape(len(first) + len(second), -1)
    labels = np.r_[np.zeros(len(first)), np.ones(len(second))]
    classifier = make_pipeline(
        StandardScaler(),
        MLPClassifier((32, 32), max_iter=300, early_stopping=True, random_state=seed),
    )
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return float(cross_val_score(classifier, features, labels, cv=split).mean())


def flatten_draws(draws: dict[str, np.ndarray], sites) -> tuple[np.ndarray, list[str]]:
    """``{site: (S, *event)}`` → ``(S, Σ numel)`` in the order of ``sites`` and labels
    ``site[i, j]`` (ArviZ's)."""
    columns, labels = [], []
    for name in sites:
        value = np.asarray(draws[name])
        flat = value.reshape(value.shape[0], -1)
        columns.append(flat)
        shape = value.shape[1:]
        if not shape:
            labels.append(name)
            continue
        for index in np.ndindex(*shape):
            labels.append(f"{name}[{', '.join(map(str, index))}]")
    return np.concatenate(columns, axis=1), labels


@dataclass
class NutsComparison:
    """The guide's posterior of one dataset against NUTS.

    :ivar table: a ``pandas.DataFrame`` indexed by coordinate, columns ``mean_q``,
        ``mean_nuts``, ``sd_q``, ``sd_nuts``, ``std_diff``, ``sd_ratio``.
    :ivar c2st: classifier two-sample accuracy (0.5 = indistinguishable), or ``None``.
    :ivar guide_draws: ``(S, P)`` guide draws of the ``P`` coordinates ``labels``.
    :ivar nuts_draws: ``(S', P)`` NUTS draws.
    """

    table: object
    c2st: float | None
    guide_draws: np.ndarray
    nuts_draws: np.ndarray
    labels: list[str]
    guide_seconds: float
    nuts_seconds: float

    @property
    def max_abs_std_diff(self) -> float:
        return float(np.abs(self.table["std_diff"]).max())


def compare_with_nuts(
    guide,
    model=None,
    *args,
    num_samples: int = 1000,
    num_warmup: int = 500,
    seed: int = 0,
    numpyro_model=None,
    reference_draws: dict | None = None,
    c2st: bool = True,
    progress: bool = False,
    **kwargs,
) -> NutsComparison:
    """Compare the guide's posterior for the dataset ``*args, **kwargs`` with NUTS.

    :param guide: an :class:`~iai_prob.inference.IterativeAmortizedGuide`, a callable
        returning a distribution over the unconstrained latents, or an
        :class:`~iai_prob.diagnostics.ApproximatePosterior`.
    :param model: the Pyro model (``None``: the guide's); NUTS runs on it with Pyro unless
        ``numpyro_model`` is given.
    :param numpyro_model: a NumPyro twin of the model taking the same positional arguments
        (as numpy arrays); NUTS then runs jitted in NumPyro (much faster per dataset).
    :param int num_samples: NUTS draws and guide draws.
    :param int num_warmup: NUTS adaptation steps.
    :param dict reference_draws: NUTS (or other MCMC) draws ``{site: (S', …)}`` of this
        dataset to compare with instead of running NUTS.
    :param bool c2st: also run the classifier two-sample test (needs scikit-learn).
    """
    import pandas as pd

    source = guide
    if not isinstance(guide, ApproximatePosterior):
        started = time.perf_counter()
        source = approximate_posterior(guide, model, *args, **kwargs)
        guide_seconds = time.perf_counter() - started
    else:
        guide_seconds = float("nan")
    if source.batched:
        raise ValueError(
            "compare_with_nuts takes one dataset (x of shape (N, ...)), got a batch of "
            f"{source.num_tasks} tasks; compare them one at a time"
        )
    draws = source.draw(num_samples, seed=seed)
    sites = source.layout.site_names
    guide_values = {name: value[:, 0].numpy() for name, value in draws.values.items()}
    data_args = source.task.data.args
    if reference_draws is not None:
        nuts = {k: np.asarray(v) for k, v in reference_draws.items()}
        nuts_seconds = float("nan")
    elif numpyro_model is not None:
        reference = NutsReference(numpyro_model, num_warmup, num_samples)
        nuts, nuts_seconds, _ = reference.run(seed, *(np.asarray(a) for a in data_args))
    else:
        nuts, nuts_seconds = pyro_nuts(
            source.model,
            *data_args,
            num_warmup=num_warmup,
            num_samples=num_samples,
            seed=seed,
            progress=progress,
            **source.task.data.kwargs,
        )
    missing = [name for name in sites if name not in nuts]
    if missing:
        raise ValueError(f"the NUTS draws have no site(s) {missing}; check numpyro_model")
    guide_flat, labels = flatten_draws(guide_values, sites)
    nuts_flat, _ = flatten_draws(nuts, sites)
    mean_q, sd_q = guide_flat.mean(0), guide_flat.std(0, ddof=1)
    mean_nuts, sd_nuts = nuts_flat.mean(0), nuts_flat.std(0, ddof=1)
    table = pd.DataFrame(
        {
            "mean_q": mean_q,
            "mean_nuts": mean_nuts,
            "sd_q": sd_q,
            "sd_nuts": sd_nuts,
            "std_diff": (mean_q - mean_nuts) / sd_nuts,
            "sd_ratio": sd_q / sd_nuts,
        },
        index=pd.Index(labels, name="coordinate"),
    )
    accuracy = c2st_accuracy(guide_flat, nuts_flat, seed=seed) if c2st else None
    return NutsComparison(
        table, accuracy, guide_flat, nuts_flat, labels, guide_seconds, float(nuts_seconds)
    )
