"""Posterior diagnostics with ArviZ: InferenceData, PSIS k̂, SBC, NUTS comparison, plots.

An amortized posterior is only useful if one can tell, per dataset, whether to trust it.
Everything here reads the posterior through one adapter (:mod:`.adapter`), so the same
functions serve the Pyro guide, exact or hand-made posteriors, and a NumPyro guide that
provides the same members.

* :func:`to_inference_data`: ArviZ ``InferenceData`` (``xarray.DataTree`` with ArviZ ≥ 1);
* :func:`psis_khat`, :func:`importance_resample`: Pareto k̂ and PSIS resampling;
* :func:`sbc`: simulation-based calibration over simulated datasets;
* :func:`compare_with_nuts`: moments, C2ST and pair plots against NUTS;
* :func:`mmd`: kernel two-sample discrepancy (e.g. generated vs held-out points);
* :func:`refinement_plot`: ELBO / exact KL against the refinement step;
* :func:`report`: all of it in one self-contained HTML file.
"""

from iai_prob.diagnostics.adapter import (
    ApproximatePosterior,
    approximate_posterior,
    log_joint_per_draw,
)
from iai_prob.diagnostics.compare import NutsComparison, c2st_accuracy, compare_with_nuts
from iai_prob.diagnostics.curves import RefinementCurve
from iai_prob.diagnostics.inference_data import to_inference_data
from iai_prob.diagnostics.mmd import median_bandwidth, mmd
from iai_prob.diagnostics.nuts import NutsReference, pyro_nuts
from iai_prob.diagnostics.posterior_source import NamedArray, PosteriorDraws, PosteriorSource
from iai_prob.diagnostics.psis import (
    KHAT_THRESHOLD,
    ImportanceSamplingError,
    importance_resample,
    khat_threshold,
    psis_khat,
)
from iai_prob.diagnostics.refinement import refinement_curve, refinement_plot
from iai_prob.diagnostics.report import DiagnosticReport, report
from iai_prob.diagnostics.sbc import SBCResult, sbc

__all__ = [
    "KHAT_THRESHOLD",
    "ApproximatePosterior",
    "DiagnosticReport",
    "ImportanceSamplingError",
    "NamedArray",
    "NutsComparison",
    "NutsReference",
    "PosteriorDraws",
    "PosteriorSource",
    "RefinementCurve",
    "SBCResult",
    "approximate_posterior",
    "c2st_accuracy",
    "compare_with_nuts",
    "importance_resample",
    "khat_threshold",
    "log_joint_per_draw",
    "median_bandwidth",
    "mmd",
    "psis_khat",
    "pyro_nuts",
    "refinement_curve",
    "refinement_plot",
    "report",
    "sbc",
    "to_inference_data",
]
