"""Bayesian neural-network classification: a one-hidden-layer tanh MLP with binary labels.

    W₁ ~ N(0, s₀²)^{H×d},  b₁ ~ N(0, s₀²)^H,  w₂ ~ N(0, s₀²/H)^H,  b₂ ~ N(0, s₀²),
    x_n ~ N(0, I_d),       y_n | x_n, θ ~ Bernoulli(logits = c · (w₂ᵀ tanh(W₁ x_n + b₁) + b₂)),

the classification counterpart of :class:`~iai_prob.models.mlp_regression.MLPRegression`
(same priors and network), with an inverse temperature ``c`` (``logit_scale``) that sets
how separable the classes are (Mittal et al. 2025b, arXiv:2502.06601: MLP
classification tasks with temperature-scaled logits). No closed-form posterior.
"""

from __future__ import annotations

from iai_prob.models.base import check_positive, check_positive_int
from iai_prob.models.mlp_regression import MLPRegression

__all__ = ["MLPClassification"]


class MLPClassification(MLPRegression):
    """``y ~ Bernoulli(logits = c f_θ(x))`` with the MLP ``f_θ`` of :class:`MLPRegression`.

    :param int dim: number of inputs ``d``.
    :param int hidden: number of hidden units ``H``.
    :param float prior_scale: prior std ``s₀`` of ``W₁``, ``b₁`` and ``b₂``; ``w₂`` has ``s₀/√H``.
    :param float logit_scale: inverse temperature ``c`` of the logits.
    """

    name = "mlp_classification"

    def __init__(
        self, dim: int = 2, hidden: int = 8, prior_scale: float = 1.0, logit_scale: float = 5.0
    ):
        self.dim = check_positive_int("dim", dim)
        self.hidden = check_positive_int("hidden", hidden)
        self.prior_scale = check_positive("prior_scale", prior_scale)
        self.logit_scale = check_positive("logit_scale", logit_scale)

    def config(self) -> dict:
        return {
            "dim": self.dim,
            "hidden": self.hidden,
            "prior_scale": self.prior_scale,
            "logit_scale": self.logit_scale,
        }

    def _likelihood(self, output):
        return self.ppl.bernoulli_logits(self.logit_scale * output)

    def _observe(self, draws, output):
        return draws.bernoulli(self.ppl.sigmoid(self.logit_scale * output))
