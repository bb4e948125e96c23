"""The NumPyro / JAX port of iai_prob (install with the ``jax`` extra; imports no torch).

The same names and keyword arguments as :mod:`iai_prob.inference`:
:class:`IterativeAmortizedGuide`, :func:`fit` (on the task families of
:mod:`iai_prob.models`, which run under NumPyro with ``family.on("numpyro")``), and
checkpoints that load in both backends
(:mod:`iai_prob.numpyro.pretrained` loads the shipped ones).
"""

from iai_prob.numpyro.xla_guard import XLAMiscompilationError, disable_ynn_reduce_fusion

disable_ynn_reduce_fusion()  # before JAX starts its backend: see iai_prob.numpyro.xla_guard

from iai_prob.checkpoint_format import CheckpointError  # noqa: E402
from iai_prob.convergence_settings import Convergence  # noqa: E402
from iai_prob.numpyro.encoders import DeepSets, SetTransformer  # noqa: E402
from iai_prob.numpyro.guide import IterativeAmortizedGuide  # noqa: E402
from iai_prob.numpyro.posteriors import DiagonalGaussian, FullRankGaussian, LowRankGaussian  # noqa: E402
from iai_prob.numpyro.training import FitResult, fit  # noqa: E402
from iai_prob.posterior_status import PosteriorNotice, PosteriorStatus, PosteriorWarning  # noqa: E402
from iai_prob.refinement_state import RefinementError, RefinementInfo, RefinementState  # noqa: E402

__all__ = [
    "CheckpointError",
    "Convergence",
    "DeepSets",
    "DiagonalGaussian",
    "FitResult",
    "FullRankGaussian",
    "IterativeAmortizedGuide",
    "LowRankGaussian",
    "PosteriorNotice",
    "PosteriorStatus",
    "PosteriorWarning",
    "RefinementError",
    "RefinementInfo",
    "RefinementState",
    "SetTransformer",
    "XLAMiscompilationError",
    "fit",
]
