"""What a posterior says about itself: converged or not, passes used, PSIS ``k̂``.

Backend-neutral (NumPy arrays, no torch or JAX), shared by both guides.

Every default answer of :class:`~iai_prob.inference.IterativeAmortizedGuide`
(``posterior``, ``median``, ``quantiles``, ``refine``, the draws Pyro's ``Predictive``
takes) comes from the convergence phase (:mod:`iai_prob.inference.convergence`, set by
:class:`~iai_prob.convergence_settings.Convergence`) and carries a
:class:`PosteriorStatus` (``guide.posterior(x, y).status``, ``guide.last_status``). An
answer the library cannot vouch for says so: :func:`warn_if_unreliable` emits one
:class:`PosteriorWarning` naming the datasets that did not converge or whose ``k̂``
exceeds 0.7 (Yao, Vehtari, Simpson, Gelman 2018: beyond it the Gaussian misses
posterior mass that importance sampling cannot repair), and what to try. Between
:data:`KHAT_NOTICE` (0.5) and 0.7 the same paper calls the Gaussian usable but not
close: a :class:`PosteriorNotice` (milder than a :class:`PosteriorWarning`) names those
datasets and points to PSIS resampling
(:func:`~iai_prob.diagnostics.importance_resample`), which corrects the draws there
(the robust Student-t regression of the real-model suite: C2ST against NUTS 0.57 from
the Gaussian, 0.53 resampled, at ``k̂ = 0.54``).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "KHAT_DRAW_SETS",
    "KHAT_LIMIT",
    "KHAT_NOTICE",
    "PosteriorNotice",
    "PosteriorStatus",
    "PosteriorWarning",
    "in_notice_band",
    "warn_if_unreliable",
]

KHAT_LIMIT = 0.7
"""``k̂`` above which a posterior is flagged."""

KHAT_NOTICE = 0.5
"""``k̂`` above which (up to :data:`KHAT_LIMIT`) a posterior gets a notice: usable, but
PSIS-resampled draws are closer (Yao et al. 2018's "good" ends at 0.5)."""


KHAT_DRAW_SETS = 256
"""Sets of draws a ``k̂`` check chooses from, by an exact fingerprint of each dataset's
data (the same set for a dataset alone or padded in a batch): two datasets share their
draws, and so their ``k̂``'s Monte Carlo error, with probability 1/256, where one set for
every dataset made the error common to all. Drawing a set of its own for every dataset
instead would cost the PyTorch guide 0.37 s of normal draws per 1,024 datasets (1,000 by
9 each), more than the rest of their convergence phase and ``k̂``."""


class PosteriorWarning(UserWarning):
    """A posterior that did not converge, or whose PSIS ``k̂`` exceeds 0.7."""


class PosteriorNotice(UserWarning):
    """A converged posterior with ``0.5 < k̂ ≤ 0.7``: usable, and PSIS resampling of its
    draws is closer to the posterior. Not a :class:`PosteriorWarning` (a filter that
    turns those into errors leaves it alone); silence it with
    ``warnings.filterwarnings("ignore", category=PosteriorNotice)``."""


class PosteriorStatus(NamedTuple):
    """Per dataset, NumPy arrays (shape ``()`` for one dataset, ``(T,)`` for a batch of
    tasks).

    :ivar converged: the full-data step's residual fell below the tolerance.
    :ivar passes: passes over the data: the learned mini-batch passes plus the
        full-data steps of the convergence phase.
    :ivar full_steps: full-data steps taken.
    :ivar residual: the last full-data step's ``KL(q_target ‖ q)``, nats.
    :ivar khat: PSIS ``k̂`` of ``q`` against the full-data log joint (``inf`` if a draw's
        log joint was not finite; ``nan`` where it was not computed).
    """

    converged: np.ndarray
    passes: np.ndarray
    full_steps: np.ndarray
    residual: np.ndarray
    khat: np.ndarray

    @classmethod
    def of(cls, *, converged, passes, full_steps, residual, khat, batched: bool):
        """A status from array-likes of shape ``(T,)`` (any backend's arrays), squeezed to
        shape ``()`` for one dataset (``batched=False``)."""
        fields = [
            np.asarray(converged, dtype=bool),
            np.asarray(passes, dtype=float),
            np.asarray(full_steps, dtype=int),
            np.asarray(residual, dtype=float),
            np.asarray(khat, dtype=float),
        ]
        return cls(*(field if batched else field.reshape(-1)[0] for field in fields))

    @classmethod
    def stack(cls, statuses) -> PosteriorStatus:
        """One status ``(G,)`` from one per dataset."""
        return cls(*(np.stack(field) for field in zip(*statuses, strict=True)))

    def task(self, index: int) -> PosteriorStatus:
        """Task ``index``'s entry of a batch's status."""
        return PosteriorStatus(*(field[index] for field in self))

    def flagged(self) -> tuple[list[int], list[int]]:
        """Indices (flattened) of the datasets not converged and of those with
        ``k̂ > 0.7``."""
        not_converged = np.flatnonzero(~np.reshape(self.converged, -1)).tolist()
        heavy = np.flatnonzero(np.reshape(self.khat, -1) > KHAT_LIMIT).tolist()
        return not_converged, heavy

    def noticed(self) -> list[int]:
        """Indices (flattened) of the converged datasets with ``0.5 < k̂ ≤ 0.7``."""
        band = in_notice_band(np.reshape(self.khat, -1), np.reshape(self.converged, -1))
        return np.flatnonzero(band).tolist()


def in_notice_band(khat, converged) -> np.ndarray:
    """Which datasets (elementwise) converged with ``0.5 < k̂ ≤ 0.7``: usable, not close
    (a :class:`PosteriorNotice`; by default their answer is PSIS moment-matched where
    that is reliably closer, see :mod:`iai_prob.moment_matching`)."""
    khat = np.asarray(khat, dtype=float)
    return (khat > KHAT_NOTICE) & (khat <= KHAT_LIMIT) & np.asarray(converged, dtype=bool)


_LIBRARIES = ("iai_prob", "torch", "pyro", "jax", "numpyro")


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside iai_prob and the libraries it runs
    in (the user's call, also through ``Predictive``), so the warning names that line."""
    folders = tuple(
        os.path.dirname(sys.modules[name].__file__) + os.sep
        for name in _LIBRARIES
        if getattr(sys.modules.get(name), "__file__", None)
    )
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(folders):
        frame, level = frame.f_back, level + 1
    return level


def _named(indices: list[int], names: Sequence | None, batched: bool) -> str:
    if not batched:
        return "the dataset"
    labels = [repr(str(names[i])) if names is not None else str(i) for i in indices]
    shown = ", ".join(labels[:5])
    more = f" and {len(labels) - 5} more" if len(labels) > 5 else ""
    noun = "group" if names is not None else "task"
    return f"{noun}{'s' if len(labels) > 1 else ''} {shown}{more}"


def warn_if_unreliable(
    status: PosteriorStatus,
    *,
    max_steps: int,
    batched: bool,
    names: Sequence | None = None,
    moment_matched: bool = False,
) -> None:
    """One :class:`PosteriorWarning` per kind of problem, and one :class:`PosteriorNotice`
    for ``0.5 < k̂ ≤ 0.7``, naming the datasets (``names`` label the tasks of a batch,
    e.g. group ids; ``moment_matched``: those answers were PSIS moment-matched)."""
    not_converged, heavy = status.flagged()
    residual = np.reshape(status.residual, -1)
    khat = np.reshape(status.khat, -1)
    messages = [  # (datasets, their worst value, message given both, category)
        (
            not_converged,
            residual,
            lambda who, worst: (
                f"the posterior of {who} did not converge in {max_steps} full-data steps "
                f"(residual up to {worst:.3g} nats): raise the cap (guide.convergence = "
                "Convergence(max_steps=...), iai infer --max-steps), or check the model and "
                "the data's scale"
            ),
            PosteriorWarning,
        ),
        (
            heavy,
            khat,
            lambda who, worst: (
                f"PSIS k̂ up to {worst:.2f} > {KHAT_LIMIT} for {who}: the Gaussian posterior "
                "misses mass (heavy tails, skew, several modes or a poor fit); compare it "
                "with NUTS (iai_prob.diagnostics.compare_with_nuts) before relying on it"
            ),
            PosteriorWarning,
        ),
        (
            status.noticed(),
            khat,
            lambda who, worst: (
                f"PSIS k̂ up to {worst:.2f} (between {KHAT_NOTICE} and {KHAT_LIMIT}) for "
                f"{who}: the Gaussian VI optimum is usable but not close (skew or heavier "
                "tails); "
                + (
                    "where its PSIS-weighted moments differ from it by more than their "
                    "Monte Carlo error, the answer is that moment-matched Gaussian; "
                    if moment_matched
                    else ""
                )
                + "draws resampled with their PSIS weights are closer "
                "(iai_prob.diagnostics.importance_resample)"
            ),
            PosteriorNotice,
        ),
    ]
    stacklevel = _caller_stacklevel()
    for datasets, values, message, category in messages:
        if datasets:
            who, worst = _named(datasets, names, batched), float(values[datasets].max())
            warnings.warn(message(who, worst), category, stacklevel=stacklevel)
