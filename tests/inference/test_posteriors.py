"""Gaussian posterior families: raw maps, projections, distributions."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import MultivariateNormal

from iai_prob.inference.posteriors import (
    DiagonalGaussian,
    FullRankGaussian,
    LowRankGaussian,
    absolute_eigenvalues,
    covariance_tril,
    gaussian_entropy,
    gaussian_kl,
    get_posterior_family,
)

DIM = 3
FAMILIES = {
    "diagonal": lambda: DiagonalGaussian(DIM),
    "low_rank": lambda: LowRankGaussian(DIM, rank=1),
    "full_rank": lambda: FullRankGaussian(DIM),
}
NUM_RAW = {"diagonal": 2 * DIM, "low_rank": 2 * DIM + DIM, "full_rank": DIM + DIM * (DIM + 1) // 2}


def random_spd(*batch, dim=DIM, seed=0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, dim, dim, generator=generator)
    return a @ a.mT + 0.1 * torch.eye(dim)


def assert_spd(matrix):
    torch.testing.assert_close(matrix, matrix.mT)
    assert (torch.linalg.eigvalsh(matrix) > 0).all()


def off_diagonal(matrix):
    return matrix - torch.diag_embed(matrix.diagonal(dim1=-2, dim2=-1))


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    return FAMILIES[request.param]()


def test_zeros_give_standard_normal(family):
    assert family.num_raw() == NUM_RAW[family.name]
    loc, precision = family.from_raw(torch.zeros(5, family.num_raw()))
    torch.testing.assert_close(loc, torch.zeros(5, DIM))
    torch.testing.assert_close(precision, torch.eye(DIM).expand(5, DIM, DIM))


def test_random_raw_gives_structured_spd(family):
    loc, precision = family.from_raw(torch.randn(5, family.num_raw()))
    assert loc.shape == (5, DIM) and precision.shape == (5, DIM, DIM)
    assert_spd(precision)
    if family.name == "diagonal":
        assert (off_diagonal(precision) == 0).all()


@pytest.mark.parametrize("value", [-2.0, 2.0])
def test_large_raw_values_stay_finite_and_spd(family, value):
    _, precision = family.from_raw(torch.full((2, family.num_raw()), 25 * value))
    assert torch.isfinite(precision).all()  # log-precisions are clamped
    _, precision = family.from_raw(torch.full((2, family.num_raw()), value))
    assert_spd(precision)


def test_project_keeps_positive_definiteness_and_diagonal(family):
    precision = random_spd(4)
    projected = family.project(precision)
    assert_spd(projected)
    # every family keeps the marginal precisions Λ_ii (the mean-field fixed point)
    torch.testing.assert_close(
        projected.diagonal(dim1=-2, dim2=-1), precision.diagonal(dim1=-2, dim2=-1)
    )
    if family.name == "diagonal":
        assert (off_diagonal(projected) == 0).all()
    if family.name == "full_rank":
        torch.testing.assert_close(projected, precision)


def test_project_keeps_diagonal_matrices(family):
    precision = torch.diag_embed(torch.tensor([[0.5, 2.0, 3.0], [4.0, 1.0, 0.25]]))
    torch.testing.assert_close(family.project(precision), precision)


def test_low_rank_projection_is_diagonal_plus_top_eigendirections():
    """``Π(Λ) = diag(r) + Σ_top (λ_i − λ_min) v_i v_iᵀ``: the residual is diagonal."""
    precision = random_spd(4, dim=4, seed=1)
    values, vectors = torch.linalg.eigh(precision)
    for rank in (1, 2):
        projected = LowRankGaussian(4, rank=rank).project(precision)
        top = vectors[..., -rank:] * (values[..., -rank:] - values[..., :1]).unsqueeze(-2)
        low_rank = top @ vectors[..., -rank:].mT
        residual = projected - low_rank
        torch.testing.assert_close(
            off_diagonal(residual), torch.zeros_like(residual), atol=1e-5, rtol=0
        )
        assert (residual.diagonal(dim1=-2, dim2=-1) > 0).all()
        assert torch.linalg.matrix_rank(low_rank).max() <= rank


def test_low_rank_with_full_rank_is_the_identity_projection():
    precision = random_spd(3)
    family = LowRankGaussian(DIM, rank=5)
    assert family.rank == DIM
    torch.testing.assert_close(family.project(precision), precision, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("dim", "rank"),
    [
        (3, 1),
        (4, 2),
        pytest.param(2, 2),
        pytest.param(3, 3),
    ],
)
def test_low_rank_projection_has_finite_gradients(dim, rank):
    precision = random_spd(2, dim=dim).requires_grad_(True)
    projected = LowRankGaussian(dim, rank=rank).project(precision)
    (grad,) = torch.autograd.grad((projected * torch.randn(dim, dim)).sum(), precision)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("batch", [(), (4,)], ids=["unbatched", "batched"])
def test_distribution_shapes_and_density(family, batch):
    loc = torch.randn(*batch, DIM)
    precision = family.project(random_spd(*batch))
    q = family.distribution(loc, precision)
    assert q.batch_shape == batch
    assert q.event_shape == (DIM,)
    assert q.rsample((6,)).shape == (6, *batch, DIM)
    z = torch.randn(2, *batch, DIM)
    reference = MultivariateNormal(loc, precision_matrix=precision)
    torch.testing.assert_close(q.log_prob(z), reference.log_prob(z), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(q.entropy(), reference.entropy(), rtol=1e-5, atol=1e-4)


def test_family_registry_and_bad_arguments():
    assert isinstance(get_posterior_family("low_rank", 4, rank=3), LowRankGaussian)
    assert get_posterior_family("low_rank", 4, rank=3).config() == {"family": "low_rank", "rank": 3}
    with pytest.raises(ValueError, match="'bogus'"):
        get_posterior_family("bogus", 2)
    with pytest.raises(ValueError, match="rank"):
        LowRankGaussian(3, rank=0)


def test_absolute_eigenvalues():
    matrix = torch.tensor([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues -1 and 3
    fixed = absolute_eigenvalues(matrix, 0.5)
    torch.testing.assert_close(torch.linalg.eigvalsh(fixed), torch.tensor([1.0, 3.0]))
    tiny = torch.tensor([[0.1, 0.0], [0.0, -0.2]])
    floored = torch.linalg.eigvalsh(absolute_eigenvalues(tiny, 0.5))
    torch.testing.assert_close(floored, torch.tensor([0.5, 0.5]))
    spd = random_spd()
    torch.testing.assert_close(absolute_eigenvalues(spd, 1e-6), spd, atol=1e-5, rtol=1e-5)


def _random_gaussians(count, generator):
    loc = torch.randn(count, DIM, generator=generator, dtype=torch.float64)
    factor = torch.randn(count, DIM, DIM, generator=generator, dtype=torch.float64)
    precision = factor @ factor.mT + 0.5 * torch.eye(DIM, dtype=torch.float64)
    return loc, precision


def test_entropy_and_kl_from_precisions_match_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    (loc_p, precision_p), (loc_q, precision_q) = (_random_gaussians(4, generator) for _ in "pq")
    p = torch.distributions.MultivariateNormal(loc_p, precision_matrix=precision_p)
    q = torch.distributions.MultivariateNormal(loc_q, precision_matrix=precision_q)
    torch.testing.assert_close(gaussian_entropy(precision_p), p.entropy())
    torch.testing.assert_close(
        gaussian_kl(loc_p, precision_p, loc_q, precision_q), torch.distributions.kl_divergence(p, q)
    )
    assert torch.all(gaussian_kl(loc_p, precision_p, loc_p, precision_p).abs() < 1e-10)


def test_absolute_eigenvalues_masks_non_finite_elements_alone():
    """A non-finite curvature gives NaN for its own batch element only, not an error."""
    good = torch.stack([torch.tensor([[1.0, 2.0], [2.0, 1.0]]), random_spd()[:2, :2]])
    bad = torch.tensor([[float("inf"), -float("inf")], [-float("inf"), 1.0]])
    batch = torch.stack([good[0], bad, good[1]])
    fixed = absolute_eigenvalues(batch, 0.5)
    assert torch.isnan(fixed[1]).all()
    torch.testing.assert_close(fixed[[0, 2]], absolute_eigenvalues(good, 0.5))


def test_absolute_eigenvalues_retries_in_float64_when_eigh_fails(monkeypatch):
    matrix = torch.stack([random_spd(), -random_spd()])
    expected = absolute_eigenvalues(matrix, 1e-3)
    eigh = torch.linalg.eigh

    def float32_fails(input):
        if input.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.eigh: the algorithm failed to converge")
        return eigh(input)

    monkeypatch.setattr(torch.linalg, "eigh", float32_fails)
    found = absolute_eigenvalues(matrix, 1e-3)
    assert found.dtype == torch.float32
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-5)


def test_absolute_eigenvalues_decomposes_only_what_is_below_the_floor(monkeypatch):
    """A curvature whose eigenvalues all exceed the floor is returned as it is; ``eigh``
    sees only the other batch elements, and gives them what it gives them alone."""
    above = random_spd() + torch.eye(DIM)
    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    below = torch.zeros(DIM, DIM)
    below[:2, :2] = indefinite
    expected_below = absolute_eigenvalues(below, 0.5)
    decomposed = []
    eigh = torch.linalg.eigh

    def recording(input):
        decomposed.append(input.shape[0])
        return eigh(input)

    monkeypatch.setattr(torch.linalg, "eigh", recording)
    found = absolute_eigenvalues(torch.stack([above, below, above]), 0.5)
    assert decomposed == [1]
    torch.testing.assert_close(found[[0, 2]], torch.stack([above, above]), rtol=0, atol=0)
    torch.testing.assert_close(found[1], expected_below)
    decomposed.clear()
    torch.testing.assert_close(absolute_eigenvalues(above, 0.5), above, rtol=0, atol=0)
    assert decomposed == []


def test_absolute_eigenvalues_never_passes_a_non_finite_curvature_through():
    """An infinite off-diagonal entry next to a large diagonal is masked, not returned."""
    large = torch.tensor([[1e6, float("inf")], [float("inf"), 1e6]])
    assert torch.isnan(absolute_eigenvalues(large, 0.5)).all()


@pytest.mark.parametrize("top", [0.0, 3.0, 6.0])
def test_covariance_tril_is_the_lower_cholesky_factor_of_the_inverse(top):
    """``L`` with ``L Lᵀ = Λ⁻¹``, lower triangular with a positive diagonal, from one
    factorization of the reversed precision; within float32's rounding of the float64
    answer up to condition numbers of 1e6."""
    dim = 9
    rotation, _ = torch.linalg.qr(
        torch.randn(dim, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    )
    precision = rotation @ torch.diag(torch.logspace(0, top, dim, dtype=torch.float64)) @ rotation.T
    precision = 0.5 * (precision + precision.T)
    exact = torch.linalg.cholesky(torch.linalg.inv(precision))
    factor = covariance_tril(precision)
    torch.testing.assert_close(factor, exact, rtol=0, atol=1e-9 * exact.abs().max())
    assert torch.equal(factor, factor.tril()) and (factor.diagonal() > 0).all()
    single = covariance_tril(precision.float()).double()
    assert ((single - exact).abs().max() / exact.abs().max()) < 2e-2
    batch = torch.stack([precision, 2 * precision])
    torch.testing.assert_close(covariance_tril(batch)[1], exact / 2**0.5)
