"""Posterior diagnostics with ArviZ: InferenceData, PSIS k̂, SBC, NUTS comparison, plots."""

from iai_prob.diagnostics.adapter import (
    ApproximatePosterior,
    NamedArray,
    PosteriorDraws,
    PosteriorSource,
    approximate_posterior,
    log_joint_per_draw,
)
from iai_prob.diagnostics.inference_data import to_inference_data

__all__ = [
    "ApproximatePosterior",
    "NamedArray",
    "PosteriorDraws",
    "PosteriorSource",
    "approximate_posterior",
    "log_joint_per_draw",
    "to_inference_data",
]
