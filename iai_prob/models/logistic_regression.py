"""Bayesian logistic regression: a non-conjugate classification family.

    w ~ N(0, s₀² I_d),   x_n ~ N(0, I_d),   y_n | x_n, w ~ Bernoulli(σ(x_nᵀ w)),

with ``σ`` the logistic sigmoid and ``y_n ∈ {0., 1.}``. The posterior has no
closed form (Bishop 2006, §4.5: the Laplace approximation is the usual
reference; here NUTS or importance sampling serve as ground truth).
"""

from __future__ import annotations

from iai_prob.models.base import LatentSite, TaskFamily, check_positive, check_positive_int

__all__ = ["LogisticRegression"]


class LogisticRegression(TaskFamily):
    """``y ~ Bernoulli(logits=xᵀw)`` with ``w ~ N(0, prior_scale² I)``.

    :param int dim: number of covariates ``d``.
    :param float prior_scale: prior standard deviation ``s₀`` of each weight.
    """

    name = "logistic_regression"

    def __init__(self, dim: int = 8, prior_scale: float = 1.0):
        self.dim = check_positive_int("dim", dim)
        self.prior_scale = check_positive("prior_scale", prior_scale)

    @property
    def latent_sites(self) -> tuple[LatentSite, ...]:
        return (LatentSite("w", (self.dim,), self.ppl.constraints.real),)

    def config(self) -> dict:
        return {"dim": self.dim, "prior_scale": self.prior_scale}

    def model(self, x, y=None):
        ppl = self.ppl
        tasks, num_points = self.plates(x, point_dims=1)
        with tasks:
            prior = ppl.dist.Normal(ppl.constant(0.0, x), self.prior_scale)
            w = ppl.sample("w", prior.expand([self.dim]).to_event(1))
        with tasks, ppl.plate(self.data_plate, num_points, dim=-1):
            return ppl.sample("y", ppl.bernoulli_logits(ppl.linear_predictor(x, w)), obs=y)

    def _simulate(self, draws, num_tasks, num_points):
        w = self.prior_scale * draws.normal((num_tasks, self.dim))
        x = draws.normal((num_tasks, num_points, self.dim))
        y = draws.bernoulli(self.ppl.sigmoid(self.ppl.einsum("tnd,td->tn", x, w)))
        return {"w": w}, x, y
