"""Pareto-smoothed importance sampling of an approximate posterior: k̂ and resampling.

With draws ``z_s ~ q(z | D)`` and log importance weights
``log w_s = log p(z_s, D) − log q(z_s)``, PSIS (Vehtari, Simpson, Gelman, Yao, Gabry
2024) fits a generalized Pareto distribution to the largest weights; its shape ``k̂``
measures how heavy the right tail of ``w = p/q`` is, i.e. how much mass of the posterior
``q`` misses (Yao, Vehtari, Simpson, Gelman 2018, "Yes, but did it work?"):

* ``k̂ < 0.5``: the weights have finite variance; ``q`` is close to the posterior and
  importance-weighted estimates converge fast;
* ``0.5 ≤ k̂ < 0.7``: finite mean, infinite variance; PSIS still gives reliable estimates,
  and resampling corrects ``q`` toward the posterior;
* ``k̂ ≥ 0.7``: the weights are too heavy-tailed for PSIS to repair (too narrow or
  misplaced ``q``); the posterior should not be trusted, and ``k̂ > 1`` means the
  importance sampling mean does not even exist. With ``S`` draws the refined threshold of
  Vehtari et al. (2024) is ``min(1 − 1 / log10 S, 0.7)`` (0.67 at ``S = 1000``).

Weights from :class:`~iai_prob.diagnostics.PosteriorDraws`, from an ``InferenceData``
built by :func:`~iai_prob.diagnostics.to_inference_data` (``sample_stats``
``log_importance_weight``) or any array ``(S,)`` / ``(S, T)`` are accepted.
"""

from __future__ import annotations

import numpy as np
import torch

from iai_prob.diagnostics.posterior_source import PosteriorDraws
from iai_prob.pareto_smoothing import pareto_smooth
from iai_prob.posterior_status import KHAT_LIMIT

__all__ = [
    "KHAT_THRESHOLD",
    "ImportanceSamplingError",
    "importance_resample",
    "khat_threshold",
    "psis_khat",
    "smoothed_log_weights",
]

KHAT_THRESHOLD = KHAT_LIMIT
"""k̂ at and above which the importance weights (and the posterior) are not trusted: the
same limit as a posterior's own status (:data:`iai_prob.posterior_status.KHAT_LIMIT`)."""


class ImportanceSamplingError(ValueError):
    """The importance weights are too heavy-tailed (k̂ ≥ threshold) to correct ``q``."""


def khat_threshold(num_samples: int) -> float:
    """``min(1 − 1 / log10 S, 0.7)``: the sample-size-aware k̂ threshold (Vehtari et al. 2024)."""
    return float(min(1.0 - 1.0 / np.log10(num_samples), KHAT_THRESHOLD))


def _log_weights(source) -> tuple[np.ndarray, bool]:
    """``(S, T)`` float64 log weights from draws, InferenceData/DataTree or an array, and
    whether they came as one dataset's ``(S,)``."""
    if isinstance(source, PosteriorDraws):
        source = source.log_weights
    elif hasattr(source, "sample_stats") or hasattr(source, "children"):
        stats = source["sample_stats"] if hasattr(source, "children") else source.sample_stats
        if "log_importance_weight" not in stats:
            raise ValueError(
                "sample_stats has no 'log_importance_weight'; build the InferenceData with "
                "iai_prob.diagnostics.to_inference_data"
            )
        weights = stats["log_importance_weight"]
        weights = weights.stack(__sample__=("chain", "draw")).transpose("__sample__", ...)
        source = weights.values
    value = source.detach().cpu().double().numpy() if torch.is_tensor(source) else source
    value = np.asarray(value, dtype=np.float64)
    single = value.ndim == 1
    if single:
        value = value[:, None]
    if value.ndim != 2 or value.shape[0] < 10:
        raise ValueError(
            f"log_weights must have shape (S,) or (S, T) with S ≥ 10 draws, got {value.shape}"
        )
    if np.isnan(value).any() or np.isposinf(value).any():
        raise ValueError("log_weights contain NaN or +inf: the model or q is not finite there")
    return value, single


def psis_khat(log_weights):
    """Pareto ``k̂`` of log importance weights ``log p(z, D) − log q(z)``.

    :param log_weights: :class:`PosteriorDraws`, an ``InferenceData`` from
        :func:`to_inference_data`, or an array / tensor ``(S,)`` or ``(S, T)``.
    :returns: a float for weights ``(S,)`` (or an unbatched InferenceData), else an array
        ``(T,)`` with one ``k̂`` per task.
    """
    weights, single = _log_weights(log_weights)
    khat = pareto_smooth(weights)[1]
    return float(khat[0]) if single else khat


def smoothed_log_weights(log_weights) -> tuple[np.ndarray, np.ndarray]:
    """PSIS-smoothed, self-normalized log weights ``(S, T)`` and ``k̂`` ``(T,)``."""
    return pareto_smooth(_log_weights(log_weights)[0])


def importance_resample(
    draws: PosteriorDraws,
    *,
    num_samples: int | None = None,
    seed: int = 0,
    max_khat: float = KHAT_THRESHOLD,
) -> PosteriorDraws:
    """Correct ``q`` toward the posterior by resampling its draws with PSIS weights.

    Sampling-importance-resampling (Rubin 1988) with Pareto-smoothed weights: the draws
    of every task are resampled with replacement, with probabilities the smoothed
    normalized weights, so that expectations under the result approximate those under
    ``p(θ | D)`` rather than ``q``. Only sound when the weights have a finite mean and
    PSIS can stabilize them, so it refuses when any task has ``k̂ ≥ max_khat``.

    :param PosteriorDraws draws: from :meth:`ApproximatePosterior.draw`.
    :param int num_samples: draws to return per task (default: as many as given).
    :param int seed: seeds the resampling.
    :param float max_khat: refuse at or above this ``k̂`` (0.7, Yao et al. 2018).
    :raises ImportanceSamplingError: naming the tasks whose ``k̂`` is too high.
    :returns: resampled :class:`PosteriorDraws` (same fields, ``(num_samples, T, …)``).
    """
    if not isinstance(draws, PosteriorDraws):
        raise ValueError(
            f"draws must be PosteriorDraws (ApproximatePosterior.draw), got {type(draws).__name__}"
        )
    num_samples = draws.z.shape[0] if num_samples is None else num_samples
    if int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    smoothed, khat = smoothed_log_weights(draws)
    bad = np.flatnonzero(khat >= max_khat)
    if bad.size:
        listed = ", ".join(f"task {t}: k̂ = {khat[t]:.2f}" for t in bad[:10])
        raise ImportanceSamplingError(
            f"importance resampling refused: PSIS k̂ ≥ {max_khat} ({listed}"
            f"{', …' if bad.size > 10 else ''}). The weights are too heavy-tailed to correct "
            "q; the posterior approximation should not be trusted for these datasets "
            "(refine longer, polish with guide.polish, or use MCMC)."
        )
    generator = np.random.default_rng(seed)
    probabilities = np.exp(smoothed - smoothed.max(0, keepdims=True))
    probabilities /= probabilities.sum(0, keepdims=True)
    index = np.stack(
        [
            generator.choice(len(p), size=int(num_samples), replace=True, p=p)
            for p in probabilities.T
        ],
        axis=1,
    )  # (num_samples, T)
    tasks = np.broadcast_to(np.arange(index.shape[1]), index.shape)

    def take(value):  # torch tensors (Pyro) and NumPy arrays (NumPyro) alike
        if torch.is_tensor(value):
            return value[torch.as_tensor(index), torch.as_tensor(tasks)]
        return np.asarray(value)[index, tasks]

    return PosteriorDraws(
        take(draws.z),
        {name: take(value) for name, value in draws.values.items()},
        take(draws.log_q),
        take(draws.log_joint),
    )
