"""The convergence phase's solver steps, each evaluated at once and branch-free so that a
compiled model runs it as one kernel: they must take the steps the sequential searches
they replace would take (a damped-Newton line search that doubles or quarters, a
backtracking that quarters the step size)."""

from __future__ import annotations

import torch

from iai_prob.inference import Convergence, convergence
from iai_prob.inference.convergence import FullData, converge
from iai_prob.inference.damping import backtracked_combine, damped_combine, unscented_batch_elbo
from iai_prob.inference.laplace import laplace_point, newton_step
from iai_prob.inference.posteriors import GaussianFamily
from iai_prob.inference.signals import sigma_point_target
from iai_prob.models import get_family
from iai_prob.refinement_state import RefinementState

FAMILY = GaussianFamily("full_rank")


class PoissonRates:
    """``f(z) = Σ_d (a_d z_d − b_d e^{z_d})`` per task (concave, mode ``log(a/b)``): far
    below the mode Newton overshoots (the line search must quarter), far above it steps
    one unit at a time (the line search must double)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.a, self.b = a, b

    def per_particle(self, z: torch.Tensor, batch=None) -> torch.Tensor:
        return (self.a * z - self.b * z.exp()).sum(-1)

    def value_and_grad(self, z: torch.Tensor, batch=None):
        return self.per_particle(z), self.a - self.b * z.exp()

    def solve(self, function, state, options):
        return function(self, *state, *options)


def _sequential_newton(log_joint, loc, metric, tolerance=1e-6, doublings=20, backtracks=12):
    """The line search as it was written before it became one step: try ``t = 1``, then
    double while ``f`` increases, or else quarter until ``f`` increases."""
    spread = torch.finfo(loc.dtype).eps ** (1 / 3)
    target = sigma_point_target(log_joint, loc, metric, FAMILY, 1e-3, spread)
    grad, precision = target.signal.grad, target.precision
    direction = torch.linalg.solve(precision, grad.unsqueeze(-1)).squeeze(-1)
    moved = []
    for task in range(loc.shape[0]):
        point, d = loc[task], direction[task]

        def f(t, point=point, d=d, task=task):
            z = (point + t * d).expand(1, loc.shape[0], -1)  # every task at this point
            return log_joint.per_particle(z)[0, task].item()

        value, best = f(0.0), None
        if 0.5 * float(grad[task] @ d) < tolerance:
            moved.append(point)
            continue
        if f(1.0) > value:
            best = 1.0
            for k in range(1, doublings + 1):
                if f(2.0**k) <= f(best):
                    break
                best = 2.0**k
        else:
            for k in range(1, backtracks + 1):
                if f(0.25**k) > value:
                    best = 0.25**k
                    break
        moved.append(point if best is None else point + best * d)
    return torch.stack(moved)


def _log_joint():
    a = torch.tensor([[3.0, 0.5], [2.0, 4.0], [1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.5, 2.0], [1.0, 0.1], [1.0, 1.0]], dtype=torch.float64)
    return PoissonRates(a, b)


def test_a_newton_iteration_takes_the_step_the_sequential_line_search_takes():
    log_joint = _log_joint()
    # task 0 far above its mode (doubling), task 1 far below (quartering), task 2 at it
    loc = torch.tensor([[9.0, 7.0], [-6.0, -5.0], [0.0, 0.0]], dtype=torch.float64)
    metric = torch.eye(2, dtype=torch.float64).expand(3, 2, 2)
    value = log_joint.per_particle(loc[None])[0]
    step = newton_step(log_joint, loc, metric, value, FAMILY, 1e-3, 1e-6, 20, 12)
    expected = _sequential_newton(log_joint, loc, metric)
    torch.testing.assert_close(step.loc, expected)
    assert step.stop.tolist() == [False, False, True]  # the mode: converged, not moved
    assert bool((step.value[:2] > value[:2]).all())
    torch.testing.assert_close(step.value, log_joint.per_particle(step.loc[None])[0])


def test_newton_iterations_reach_the_mode_and_its_curvature():
    log_joint = _log_joint()
    loc = torch.tensor([[9.0, 7.0], [-6.0, -5.0], [0.5, -0.5]], dtype=torch.float64)
    metric = torch.eye(2, dtype=torch.float64).expand(3, 2, 2)
    value = log_joint.per_particle(loc[None])[0]
    for _ in range(60):
        step = newton_step(log_joint, loc, metric, value, FAMILY, 1e-3, 1e-12, 20, 12)
        loc, value, metric = step.loc, step.value, step.precision
    mode = (log_joint.a / log_joint.b).log()
    torch.testing.assert_close(loc, mode)
    torch.testing.assert_close(metric, torch.diag_embed(log_joint.a), rtol=1e-6, atol=1e-6)


def test_backtracking_at_once_accepts_what_the_sequential_backtracking_accepts():
    """One target, step sizes that it accepts at ρ = 1, at a quartered ρ, and never."""
    log_joint = _log_joint()
    loc = torch.tensor([[1.0, 1.0], [-4.0, -3.0], [0.0, 0.0]], dtype=torch.float64)
    precision = torch.eye(2, dtype=torch.float64).expand(3, 2, 2) * 4.0
    target = sigma_point_target(log_joint, loc, precision, FAMILY, 1e-3)
    # task 2 is offered its own precision about a mean far above its ELBO optimum (which
    # lies below the mode, E_q e^z = e^{μ + σ²/2}): no step size ascends
    offered = torch.tensor([False, False, True])
    linear = torch.where(offered[:, None], 50.0, target.linear)
    target_precision = torch.where(offered[:, None, None], precision, target.precision)
    step_size = torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64)
    base = unscented_batch_elbo(log_joint, loc, precision, None)
    at_once = backtracked_combine(
        log_joint, loc, precision, step_size, (linear, target_precision), base, tolerance=1e-12
    )
    loc_seq, precision_seq, used = damped_combine(
        loc,
        precision,
        step_size,
        [lambda: (linear, target_precision)],
        None,
        log_joint,
        base=base,
        max_backtracks=6,
        tolerance=1e-12,
    )
    assert at_once.accepted.tolist() == (used > 0).tolist()
    assert not bool(at_once.accepted[2])  # rejected: the state is kept, with its ELBO
    torch.testing.assert_close(at_once.loc, loc_seq)
    torch.testing.assert_close(at_once.precision, precision_seq)
    torch.testing.assert_close(at_once.value[2], base[2])
    expected_value = unscented_batch_elbo(log_joint, loc_seq, precision_seq, None)
    torch.testing.assert_close(at_once.value, expected_value)


def test_stacked_candidates_have_the_elbo_of_each_alone():
    log_joint = _log_joint()
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(4, 3, 2, dtype=torch.float64, generator=generator)
    root = torch.randn(4, 3, 2, 2, dtype=torch.float64, generator=generator)
    precision = root @ root.mT + torch.eye(2, dtype=torch.float64)
    stacked = unscented_batch_elbo(log_joint, loc, precision, None)
    alone = torch.stack(
        [unscented_batch_elbo(log_joint, m, p, None) for m, p in zip(loc, precision, strict=True)]
    )
    torch.testing.assert_close(stacked, alone)


def test_a_short_ladder_continued_one_length_at_a_time_finds_the_same_laplace_point():
    """Data too large to evaluate every step length at once: the ladder ``{1, 2, ¼}``,
    continued past its ends where it must, takes the steps the whole ladder takes."""
    log_joint = _log_joint()
    loc = torch.tensor([[9.0, 7.0], [-6.0, -5.0], [0.5, -0.5]], dtype=torch.float64)
    whole = laplace_point(log_joint, loc, FAMILY, at_once=True, max_steps=8, tolerance=0.0)
    short = laplace_point(log_joint, loc, FAMILY, at_once=False, max_steps=8, tolerance=0.0)
    torch.testing.assert_close(short.loc, whole.loc)
    torch.testing.assert_close(short.precision, whole.precision)


def test_the_phase_is_the_same_with_candidates_at_once_or_one_at_a_time(monkeypatch, read_task):
    family = get_family("logistic_regression", dim=3)
    _, x, y = family.sample(2, 60, generator=torch.Generator().manual_seed(5))
    _, data, log_joint = read_task(family.model, x, y)
    full = FullData.in_memory(data.to_dtype(torch.float64), log_joint, chunk_size=1000)
    start = RefinementState(
        torch.full((2, 3), 3.0, dtype=torch.float64),
        torch.eye(3, dtype=torch.float64).expand(2, 3, 3) * 0.1,
    )
    answers = []
    for size in (convergence.AT_ONCE_SIZE, 0):  # every candidate at once, then not
        monkeypatch.setattr(convergence, "AT_ONCE_SIZE", size)
        answers.append(converge(start, full, FAMILY, Convergence()))
    (state, converged, steps, _), (state_1, converged_1, steps_1, _) = answers
    assert bool(converged.all()) and bool(converged_1.all())
    assert steps.tolist() == steps_1.tolist()
    torch.testing.assert_close(state.loc, state_1.loc)
    torch.testing.assert_close(state.precision, state_1.precision)
