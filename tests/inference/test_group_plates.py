"""Global latents inside a group plate (the group effects of a hierarchical model).

The model: ``μ ~ N(0, 10)``, ``a_g ~ N(μ, τ)`` in ``plate("groups", G)``, ``y_n ~ N(a_{g_n},
σ)`` in the data plate, on raw units (``y`` near 50). Its posterior over ``(μ, a)`` is
Gaussian and known exactly, so the converged default of an untrained guide must reach it
(KL ≤ 0.05, as for the conjugate models), alone and for a batch of tasks; the guide's
draws must sit in the model's plates (``Predictive``, ``SVI``) with the right log density.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyro import poutine, set_rng_seed
from pyro.infer import Predictive, Trace_ELBO
from pyroapi import distributions as dist
from pyroapi import pyro

from iai_prob.inference import IterativeAmortizedGuide
from iai_prob.inference.posteriors import gaussian_kl

GROUPS, ROWS, PRIOR, TAU, SIGMA = 4, 5, 10.0, 2.0, 1.0
INDEX = torch.arange(GROUPS).repeat_interleave(ROWS)


def hierarchical(group, y=None):
    """The model, in pyro-api: ``tests/numpyro/test_group_plates.py`` runs it under NumPyro."""
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR))
    with pyro.plate("groups", GROUPS):
        a = pyro.sample("a", dist.Normal(mu, TAU))
    with pyro.plate("data", group.shape[-1]):
        pyro.sample("y", dist.Normal(a[..., group], SIGMA), obs=y)


def hierarchical_tasks(group, y=None):
    with pyro.plate("tasks", y.shape[0], dim=-2):
        mu = pyro.sample("mu", dist.Normal(0.0, PRIOR))
        with pyro.plate("groups", GROUPS, dim=-1):
            a = pyro.sample("a", dist.Normal(mu, TAU))
        with pyro.plate("data", group.shape[-1], dim=-1):
            pyro.sample("y", dist.Normal(a[..., group], SIGMA), obs=y)


def hierarchical_scales(group, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR))
    with pyro.plate("groups", GROUPS):
        scale = pyro.sample("scale", dist.HalfNormal(3.0))
    with pyro.plate("data", group.shape[-1]):
        pyro.sample("y", dist.Normal(mu, scale[..., group]), obs=y)


def exact_posterior(y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, precision)`` of ``(μ, a_1 … a_G)`` given one task's ``y``."""
    precision = np.zeros((GROUPS + 1, GROUPS + 1))
    linear = np.zeros(GROUPS + 1)
    precision[0, 0] = 1 / PRIOR**2 + GROUPS / TAU**2
    for group in range(GROUPS):
        precision[0, group + 1] = precision[group + 1, 0] = -1 / TAU**2
        precision[group + 1, group + 1] = 1 / TAU**2 + ROWS / SIGMA**2
        linear[group + 1] = y[INDEX.numpy() == group].sum() / SIGMA**2
    mean = np.linalg.solve(precision, linear)
    return torch.as_tensor(mean), torch.as_tensor(precision)


def simulated_y(num_tasks: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    effects = 50.0 + 3.0 * rng.normal(size=(num_tasks, GROUPS))
    return torch.as_tensor(effects[:, INDEX] + rng.normal(size=(num_tasks, GROUPS * ROWS)))


def _kl_to_exact(posterior, y: torch.Tensor) -> float:
    mean, precision = exact_posterior(y.numpy())
    return float(
        gaussian_kl(posterior.mean.double(), posterior.precision_matrix.double(), mean, precision)
    )


def test_the_default_reaches_the_exact_posterior_of_group_effects():
    y = simulated_y(1)[0]
    guide = IterativeAmortizedGuide(hierarchical)
    posterior = guide.posterior(INDEX, y.float())
    assert guide.layout_signature == [["mu", []], ["a", [GROUPS]]]
    assert _kl_to_exact(posterior, y) <= 0.05
    assert bool(guide.last_status.converged)


def test_each_task_of_a_batch_gets_its_own_exact_posterior():
    y = simulated_y(3, seed=1)
    guide = IterativeAmortizedGuide(hierarchical_tasks)
    posterior = guide.posterior(INDEX, y.float())
    for task in range(3):
        one = torch.distributions.MultivariateNormal(
            posterior.mean[task], precision_matrix=posterior.precision_matrix[task]
        )
        assert _kl_to_exact(one, y[task]) <= 0.05


def test_predictive_draws_group_effects_in_the_models_plate():
    y = simulated_y(1, seed=2)[0].float()
    guide = IterativeAmortizedGuide(hierarchical)
    mean, _ = exact_posterior(y.double().numpy())
    draws = Predictive(hierarchical, guide=guide, num_samples=2000, return_sites=["a"])(INDEX, y)
    assert draws["a"].shape == (2000, GROUPS)
    torch.testing.assert_close(draws["a"].mean(0).double(), mean[1:], atol=0.06, rtol=0)
    loss = Trace_ELBO().loss(hierarchical, guide, INDEX, y)
    assert np.isfinite(loss)


# five rows per group give each scale a skewed posterior: the library says so (k̂ > 0.7)
@pytest.mark.filterwarnings("ignore::iai_prob.posterior_status.PosteriorWarning")
def test_a_constrained_group_site_carries_each_groups_jacobian():
    """The guide draws each group's scale in the groups plate, with its own log-Jacobian
    as log density (``scale_g = exp(u_g)``: ``−u_g``), not their sum repeated per group."""
    y = simulated_y(1, seed=3)[0].float()
    guide = IterativeAmortizedGuide(hierarchical_scales)
    guide.posterior(INDEX, y)
    set_rng_seed(0)
    trace = poutine.trace(guide).get_trace(INDEX, y)
    trace.compute_log_prob()
    latent = trace.nodes[f"_{guide._pyro_name}_latent"]["value"]
    scale = trace.nodes["scale"]
    assert [frame.name for frame in scale["cond_indep_stack"]] == ["groups"]
    torch.testing.assert_close(scale["value"], latent[1:].exp())
    torch.testing.assert_close(scale["log_prob"], -latent[1:])


def test_a_group_plate_outside_the_tasks_plate_is_refused_by_name():
    def groups_outside(group, y=None):
        with pyro.plate("tasks", y.shape[0], dim=-1):
            with pyro.plate("groups", GROUPS, dim=-2):
                a = pyro.sample("a", dist.Normal(0.0, 1.0))
            with pyro.plate("data", group.shape[-1], dim=-2):
                pyro.sample("y", dist.Normal(a[group], 1.0), obs=y.T)

    guide = IterativeAmortizedGuide(groups_outside)
    with pytest.raises(ValueError, match="put the tasks plate outermost"):
        guide.prepare(INDEX, simulated_y(2).float())


def test_the_inference_data_names_the_group_dim_after_its_plate():
    from iai_prob.diagnostics import to_inference_data

    y = simulated_y(1, seed=4)[0].float()
    guide = IterativeAmortizedGuide(hierarchical)
    idata = to_inference_data(guide, None, INDEX, y, num_samples=50)
    assert idata.posterior["a"].dims == ("chain", "draw", "groups")
    assert idata.posterior["a"].shape == (1, 50, GROUPS)
