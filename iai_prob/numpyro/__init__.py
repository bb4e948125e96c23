"""The NumPyro / JAX port of iai_prob (install with the ``jax`` extra; imports no torch).

The same names and keyword arguments as :mod:`iai_prob.inference`:
:class:`IterativeAmortizedGuide`, :func:`fit`, the task families in
:mod:`iai_prob.numpyro.models`, and checkpoints that load in both backends
(:mod:`iai_prob.numpyro.pretrained` loads the shipped ones).
"""

from iai_prob.checkpoint_format import CheckpointError
from iai_prob.numpyro.encoders import DeepSets, SetTransformer
from iai_prob.numpyro.guide import IterativeAmortizedGuide
from iai_prob.numpyro.posteriors import DiagonalGaussian, FullRankGaussian, LowRankGaussian
from iai_prob.numpyro.refinement import RefinementError, RefinementInfo, RefinementState
from iai_prob.numpyro.training import FitResult, fit

__all__ = [
    "CheckpointError",
    "DeepSets",
    "DiagonalGaussian",
    "FitResult",
    "FullRankGaussian",
    "IterativeAmortizedGuide",
    "LowRankGaussian",
    "RefinementError",
    "RefinementInfo",
    "RefinementState",
    "SetTransformer",
    "fit",
]
