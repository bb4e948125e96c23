"""Amortized, iteratively refined inference over task latents (the PyTorch / Pyro side)."""

from iai_prob.convergence_settings import Convergence
from iai_prob.inference.checkpoint import CheckpointError
from iai_prob.inference.encoders import DeepSets, SetTransformer
from iai_prob.inference.guide import IterativeAmortizedGuide
from iai_prob.inference.implicit import ImplicitPredictor
from iai_prob.inference.posteriors import DiagonalGaussian, FullRankGaussian, LowRankGaussian
from iai_prob.inference.predictive import Predictive
from iai_prob.inference.sources import DatasetCollection, FamilyTasks, PriorPredictiveTasks
from iai_prob.inference.training import fit
from iai_prob.inference.training_state import FitResult
from iai_prob.posterior_status import PosteriorNotice, PosteriorStatus, PosteriorWarning
from iai_prob.refinement_state import RefinementError, RefinementInfo, RefinementState

__all__ = [
    "CheckpointError",
    "Convergence",
    "DatasetCollection",
    "DeepSets",
    "DiagonalGaussian",
    "FamilyTasks",
    "FitResult",
    "FullRankGaussian",
    "ImplicitPredictor",
    "IterativeAmortizedGuide",
    "LowRankGaussian",
    "PosteriorNotice",
    "PosteriorStatus",
    "PosteriorWarning",
    "Predictive",
    "PriorPredictiveTasks",
    "RefinementError",
    "RefinementInfo",
    "RefinementState",
    "SetTransformer",
    "fit",
]
