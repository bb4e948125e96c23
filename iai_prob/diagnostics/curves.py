"""What a refinement curve holds, for either backend.

:func:`~iai_prob.diagnostics.refinement.refinement_curve` (Pyro) and
:func:`~iai_prob.diagnostics.numpyro_refinement.numpyro_refinement_curve` (NumPyro) both
return a :class:`RefinementCurve`, which both import from here rather than from each
other.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["RefinementCurve"]


class RefinementCurve(NamedTuple):
    """Per step ``k = 0..K``: Monte Carlo ELBO, exact KL (or ``None``), points seen."""

    steps: np.ndarray
    elbo: np.ndarray
    kl: np.ndarray | None
    log_evidence: float | None
    points_seen: np.ndarray
