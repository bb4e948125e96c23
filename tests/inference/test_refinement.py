"""The refinement core: mini-batch schedule, state checks, ``Refiner.init``/``step``."""

from __future__ import annotations

import math

import pytest
import torch

from iai_prob.inference.posteriors import FullRankGaussian
from iai_prob.inference.refinement import (
    RefinementError,
    RefinementState,
    Refiner,
    check_state,
    minibatch_schedule,
)
from iai_prob.refiner_options import RefinerOptions

ENCODER_OPTIONS = {"embed_dim": 8, "hidden_dim": 16}


@pytest.mark.parametrize(
    ("num_points", "batch_size"), [(12, 4), (10, 3), (7, 7), (5, 8), (64, 16), (67, 16)]
)
def test_minibatch_schedule_partitions_every_pass(num_points, batch_size):
    num_batches = math.ceil(num_points / batch_size)
    passes = 3
    schedule = minibatch_schedule(
        num_points, batch_size, passes * num_batches, torch.Generator().manual_seed(0)
    )
    assert len(schedule) == passes * num_batches
    for p in range(passes):
        batches = schedule[p * num_batches : (p + 1) * num_batches]
        indices = torch.cat(batches)
        assert torch.equal(indices.sort().values, torch.arange(num_points))  # each index once
        sizes = [len(batch) for batch in batches]
        assert max(sizes) - min(sizes) <= 1
        assert max(sizes) <= batch_size


def test_minibatch_schedule_is_seeded_and_reshuffled():
    first = minibatch_schedule(20, 5, 8, torch.Generator().manual_seed(3))
    again = minibatch_schedule(20, 5, 8, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(torch.cat(first[:4]), torch.cat(first[4:]))  # a new permutation
    partial = minibatch_schedule(20, 5, 6, torch.Generator().manual_seed(3))
    assert len(partial) == 6  # a partial second pass


def _state(num_tasks=3, dim=2):
    return RefinementState(torch.zeros(num_tasks, dim), torch.eye(dim).repeat(num_tasks, 1, 1))


def test_check_state_passes_valid_states_through():
    state = _state()
    assert check_state(state) is state


@pytest.mark.parametrize("problem", ["nan-loc", "inf-precision", "not-pd"])
def test_check_state_names_the_bad_task(problem):
    state = _state()
    if problem == "nan-loc":
        state.loc[1, 0] = float("nan")
    elif problem == "inf-precision":
        state.precision[1, 0, 0] = float("inf")
    else:
        state.precision[1] = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(RefinementError, match=r"task\(s\) \[1\]"):
        check_state(state)


def test_state_detach():
    state = RefinementState(torch.zeros(1, 2, requires_grad=True), torch.eye(2)[None], 3, 40)
    detached = state.detach()
    assert not detached.loc.requires_grad
    assert (detached.step, detached.points_seen) == (3, 40)


def _refiner(**options):
    options = RefinerOptions(encoder="deep_sets", encoder_options=ENCODER_OPTIONS, **options)
    return Refiner(FullRankGaussian(2), 3, options)


def test_untrained_pass_averages_the_exact_minibatch_targets(linreg, simulate, read_task):
    """With ``δ = 0``, ``ρ_k = 1/(k + 1 + w)``, so after one pass over ``K`` equal batches
    ``λ_K = (w λ_0 + Σ_k λ̂_k) / (K + w)``: for linear regression ``Λ_K = (wI + KΛ*)/(K + w)``
    and ``η_K = K η* / (K + w)`` with ``(η*, Λ*)`` the exact posterior."""
    _, x, y = simulate(linreg, 3, 48)
    _, data, log_joint = read_task(linreg.model, x, y)
    refiner = _refiner()
    weight = float(refiner.update.log_init_weight.detach().exp())
    state = refiner.init(data)
    torch.testing.assert_close(state.loc, torch.zeros(3, 2))
    torch.testing.assert_close(state.precision, torch.eye(2).expand(3, 2, 2))
    schedule = minibatch_schedule(48, 16, 3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for k, index in enumerate(schedule):
            state, info = refiner.step(state, data.subset(index), log_joint)
            torch.testing.assert_close(info.step_size, torch.full((3,), 1 / (k + 1 + weight)))
            assert torch.isfinite(info.batch_log_joint).all()
    assert (state.step, state.points_seen) == (3, 48)
    exact = linreg.exact_posterior(x, y)
    precision = (weight * torch.eye(2) + 3 * exact.precision_matrix) / (3 + weight)
    linear = 3 * (exact.precision_matrix @ exact.mean.unsqueeze(-1)).squeeze(-1) / (3 + weight)
    torch.testing.assert_close(state.precision, precision, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(
        (state.precision @ state.loc.unsqueeze(-1)).squeeze(-1), linear, rtol=1e-4, atol=1e-3
    )


def test_data_only_step_uses_the_learned_site_target(linreg, simulate, read_task):
    _, x, y = simulate(linreg, 2, 16)
    _, data, log_joint = read_task(linreg.model, x, y)
    refiner = _refiner(signals=("data",))
    assert refiner.site_target is not None
    state, info = refiner.step(refiner.init(data), data.subset(torch.arange(8)), log_joint)
    assert torch.isnan(info.batch_log_joint).all()
    assert state.loc.shape == (2, 2) and torch.isfinite(state.loc).all()
    # untrained site target: Λ̂ = I + (N/|B|) I, so Λ_1 = (1 − ρ) I + ρ 3I
    rho = info.step_size[:, None, None]
    torch.testing.assert_close(state.precision, (1 + 2 * rho) * torch.eye(2))


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"signals": ("bogus",)}, "signals"),
        ({"signals": ()}, "signals"),
        ({"linearization": "bogus"}, "linearization"),
    ],
    ids=["unknown-signal", "no-signal", "unknown-linearization"],
)
def test_refiner_rejects_bad_options(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        _refiner(**options)


@pytest.mark.parametrize("precision", [1e-3, 1e-1])
def test_wide_states_of_a_mixture_stay_valid(precision, make_family, simulate, read_task):
    """Sigma points of a very wide state reach where the mixture weights underflow; the
    step must still return a finite, positive-definite state (not raise a linalg error)."""
    family = make_family("gaussian_mixture")
    _, x, y = simulate(family, 3, 12)
    layout, data, log_joint = read_task(family.model, x, y)
    refiner = Refiner(
        FullRankGaussian(layout.latent_dim),
        data.features.shape[-1],
        RefinerOptions(encoder="deep_sets", encoder_options=ENCODER_OPTIONS),
    )
    eye = torch.eye(layout.latent_dim)
    state = RefinementState(torch.zeros(3, layout.latent_dim), precision * eye.repeat(3, 1, 1))
    with torch.no_grad():
        new_state, info = refiner.step(state, data.subset(torch.arange(6)), log_joint)
    assert torch.isfinite(new_state.loc).all()
    assert (torch.linalg.eigvalsh(new_state.precision) > 0).all()
    assert ((info.step_size >= 0) & (info.step_size <= 1)).all()
