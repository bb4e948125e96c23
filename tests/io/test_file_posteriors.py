"""Streaming and grouped posteriors from files, against exact posteriors and plain calls."""

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch

from iai_prob.inference import Convergence, IterativeAmortizedGuide, PosteriorWarning
from iai_prob.io import Columns, Table, grouped_posteriors, stream_posterior
from iai_prob.models import get_family


def _kl(q, exact):
    return float(torch.distributions.kl_divergence(q, exact))


def test_stream_matches_refine_and_the_exact_posterior(
    tmp_path, shipped_guide, make_grouped_frame, x_columns
):
    family = shipped_guide.family
    frame = make_grouped_frame(family, [1500], seed=3).sort_index()
    path = tmp_path / "big.parquet"
    frame.to_parquet(path, row_group_size=500)
    columns = Columns.of(x_columns, "y", guide=shipped_guide)
    result = stream_posterior(shipped_guide, Table(path, chunk_rows=300), columns)
    x = torch.as_tensor(frame[x_columns].to_numpy(copy=True), dtype=torch.float32)
    y = torch.as_tensor(frame["y"].to_numpy(copy=True), dtype=torch.float32)
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 1500, 64)]
    reference = shipped_guide.refine(batches, num_points=1500)
    assert result.num_rows == 1500 and [s.name for s in result.layout.sites] == ["w"]
    assert torch.allclose(result.posterior.mean, reference.mean, atol=1e-5)
    assert _kl(result.posterior, family.exact_posterior(x, y)) < 0.1


def test_grouped_posteriors_equal_one_call_per_group(grouped_csv, shipped_guide, x_columns):
    family = shipped_guide.family
    columns = Columns.of(x_columns, "y", guide=shipped_guide)
    result = grouped_posteriors(shipped_guide, Table(grouped_csv), columns, group="unit")
    assert result.batched and list(result.keys) == [f"g{i:02d}" for i in range(24)]
    assert sorted(set(result.sizes)) == [12, 20, 33]
    kls = []
    for index in range(len(result.keys)):
        x, y = result.data.group(index)
        alone = shipped_guide.posterior(x, y)
        assert torch.allclose(result.posterior.mean[index], alone.mean, atol=1e-4)
        assert torch.allclose(
            result.posterior.covariance_matrix[index], alone.covariance_matrix, atol=1e-5
        )
        q = torch.distributions.MultivariateNormal(
            result.posterior.loc[index], scale_tril=result.posterior.scale_tril[index]
        )
        kls.append(_kl(q, family.exact_posterior(x, y)))
    assert np.median(kls) < 0.1


def _one_dataset_model(x, y=None):
    """A model written for one dataset only (no tasks plate)."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[-1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", dist.Normal((x * w).sum(-1), 0.5), obs=y)


def test_a_model_without_tasks_plate_gets_one_call_per_group(
    tmp_path, shipped_guide, make_grouped_frame, x_columns
):
    path = tmp_path / "g.csv"
    make_grouped_frame(shipped_guide.family, [10, 10, 15], seed=1).to_csv(path, index=False)
    guide = IterativeAmortizedGuide(_one_dataset_model, encoder="deep_sets")
    columns = Columns.of(x_columns, "y")
    result = grouped_posteriors(guide, Table(path), columns, group="unit")
    assert not result.batched and result.posterior.batch_shape == (3,)
    x, y = result.data.group(2)
    assert torch.allclose(result.posterior.mean[2], guide.posterior(x, y).mean, atol=1e-5)


def test_group_errors(grouped_csv, shipped_guide, x_columns):
    columns = Columns.of(x_columns, "y", guide=shipped_guide)
    with pytest.raises(ValueError, match="group: no column 'school'"):
        grouped_posteriors(shipped_guide, Table(grouped_csv), columns, group="school")
    with pytest.raises(ValueError, match="max_tasks"):
        grouped_posteriors(shipped_guide, Table(grouped_csv), columns, group="unit", max_tasks=0)


def _median_kl_to_exact(result, family) -> float:
    kls = [
        _kl(
            torch.distributions.MultivariateNormal(
                result.posterior.loc[i], scale_tril=result.posterior.scale_tril[i]
            ),
            family.exact_posterior(*result.data.group(i)),
        )
        for i in range(len(result.keys))
    ]
    return float(np.median(kls))


def test_more_passes_move_grouped_posteriors_toward_the_exact_ones(grouped_csv, shipped_guide):
    """The learned passes alone (``convergence=None``) approach the exact posteriors
    pass by pass; the converged default is there after one."""
    family = shipped_guide.family
    columns = Columns.of([f"x{i}" for i in range(8)], "y", guide=shipped_guide)
    medians = []
    default, shipped_guide.convergence = shipped_guide.convergence, None
    try:
        for passes in (1, 5):
            result = grouped_posteriors(
                shipped_guide, Table(grouped_csv), columns, group="unit", passes=passes
            )
            medians.append(_median_kl_to_exact(result, family))
    finally:
        shipped_guide.convergence = default
    assert medians[1] < 0.5 * medians[0]
    result = grouped_posteriors(shipped_guide, Table(grouped_csv), columns, group="unit")
    assert bool(result.status.converged.all())
    assert _median_kl_to_exact(result, family) < min(1e-3, medians[1])


def test_groups_not_converged_are_named_by_their_keys(tmp_path):
    family = get_family("logistic_regression", dim=2)
    _, x, y = family.sample(3, 30, generator=torch.Generator().manual_seed(0))
    frame = pd.DataFrame(x.reshape(-1, 2).numpy(), columns=["a", "b"])
    frame["y"] = y.reshape(-1).numpy()
    frame["site"] = np.repeat(["north", "south", "west"], 30)
    frame.to_csv(tmp_path / "sites.csv", index=False)
    guide = IterativeAmortizedGuide(family, convergence=Convergence(max_steps=1, tolerance=1e-9))
    columns = Columns.of(["a", "b"], "y", guide=guide)
    with pytest.warns(PosteriorWarning, match="groups 'north', 'south', 'west' did not converge"):
        result = grouped_posteriors(guide, Table(tmp_path / "sites.csv"), columns, group="site")
    assert result.status.converged.shape == (3,) and not bool(result.status.converged.any())


def _logistic_groups(tmp_path, sizes):
    family = get_family("logistic_regression", dim=2)
    frames = []
    for index, size in enumerate(sizes):
        _, x, y = family.sample(1, size, generator=torch.Generator().manual_seed(index))
        frame = pd.DataFrame(x[0].numpy(), columns=["a", "b"])
        frame["y"] = y[0].numpy()
        frame["unit"] = f"u{index}"
        frames.append(frame)
    path = tmp_path / "ragged.csv"
    pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=0).to_csv(path, index=False)
    return family, path


@pytest.mark.filterwarnings("ignore::iai_prob.inference.PosteriorWarning")
def test_groups_of_unequal_sizes_share_padded_batches_and_keep_their_own_answers(tmp_path):
    """Sizes 4 to 90 fall in 6 padded sizes; every group's posterior, its status, its
    exported ``lp`` and its spread check are the ones it gets alone."""
    from iai_prob.cli.assumptions import grouped_sd_pvalues
    from iai_prob.io import inference_data
    from iai_prob.io.grouped import padded_size, size_batches

    sizes = [4, 5, 9, 11, 12, 30, 31, 33, 90]
    family, path = _logistic_groups(tmp_path, sizes)
    guide = IterativeAmortizedGuide(family)
    columns = Columns.of(["a", "b"], "y", guide=guide)
    result = grouped_posteriors(guide, Table(path), columns, group="unit", max_tasks=2)
    batches = list(size_batches(result.sizes, 2, padded=True))
    assert (
        {rows for _, rows in batches} == {4, 5, 10, 12, 36, 109} == {padded_size(n) for n in sizes}
    )
    assert sum(len(members) for members, _ in batches) == len(sizes)
    idata = inference_data(guide, result, num_samples=50)
    pvalues = grouped_sd_pvalues(guide, result)["y"]
    for index in range(len(sizes)):
        x, y = result.data.group(index)
        alone = guide.posterior(x, y)
        assert torch.allclose(result.posterior.mean[index], alone.mean, atol=1e-4)
        assert torch.allclose(
            result.posterior.covariance_matrix[index], alone.covariance_matrix, atol=1e-5
        )
        assert result.status.passes[index] == alone.status.passes
        # lp = log p(z_s, D_g) of the exported draws (w is unconstrained), over its rows alone
        draws = torch.as_tensor(idata.posterior.w.isel(group=index).values[0])
        task = guide.prepare(x[None], y[None])
        lp = task.log_joint.per_particle(draws[:, None], task.data)[:, 0]
        assert np.allclose(idata.sample_stats.lp.isel(group=index).values[0], lp, rtol=1e-5)
    # the spread check ran on every group (its statistics over valid rows: test_model_fit)
    assert pvalues.shape == (len(sizes),) and bool(((pvalues > 0) & (pvalues < 1)).all())


def test_padded_sizes_hold_every_size_with_at_most_a_quarter_of_padding():
    from iai_prob.io.grouped import padded_size

    padded = [padded_size(n) for n in range(1, 20_000)]
    assert all(n <= rows < 1.25 * n + 1 for n, rows in enumerate(padded, start=1))
    assert padded == sorted(padded) and len(set(padded[4:500])) == 22
