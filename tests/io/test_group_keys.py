"""Group keys are the file's text: distinct strings are distinct groups, whatever the chunks."""

import numpy as np
import pandas as pd
import pytest
import torch

from iai_prob.io import Columns, Table, grouped_posteriors, inference_data, read_groups

# the first rows look like integers, later ones do not: per-chunk type inference used to
# read "1" as 1 in some chunks and as "1" in others, and "1.0" as 1.0 or "1.0"
MIXED_KEYS = ["1", "2", "3"] * 4 + ["01", "a", "1.0"] * 4 + ["1", "01", "a", "1.0"] * 6

# strings pandas reads as missing by default: in a group column they are keys (NA: Namibia)
MARKERS = ["NA", "None", "nan", "NaN", "null", "N/A", "n/a", "<NA>", "#N/A"]


def _keyed_frame(family, keys, *, seed=0) -> pd.DataFrame:
    """Rows of ``family`` with group column ``g`` holding ``keys`` (one row each)."""
    _, x, y = family.sample(1, len(keys), generator=torch.Generator().manual_seed(seed))
    frame = pd.DataFrame(x[0].double().numpy(), columns=[f"x{i}" for i in range(8)])
    frame["y"] = y[0].double().numpy()
    frame.insert(0, "g", keys)
    return frame


@pytest.fixture
def columns(shipped_guide, x_columns):
    return Columns.of(x_columns, "y", guide=shipped_guide)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_leading_zeros_make_another_group(tmp_path, shipped_guide, columns, suffix):
    path = tmp_path / f"keys{suffix}"
    frame = _keyed_frame(shipped_guide.family, ["007"] * 10 + ["7"] * 12 + ["007"] * 3)
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    data = read_groups(Table(path), columns, "g")
    assert list(data.keys) == ["007", "7"] and list(data.sizes) == [13, 12]


def test_groups_and_posteriors_do_not_depend_on_chunk_rows(tmp_path, shipped_guide, columns):
    path = tmp_path / "mixed.csv"
    _keyed_frame(shipped_guide.family, MIXED_KEYS, seed=4).to_csv(path, index=False)
    counts = pd.Series(MIXED_KEYS).value_counts()
    results = [
        grouped_posteriors(shipped_guide, Table(path, chunk_rows=rows), columns, group="g")
        for rows in (1, 3, 10_000)
    ]
    for result in results:  # verbatim, in natural order (01 before 1 before 1.0 before 2)
        assert list(result.keys) == ["01", "1", "1.0", "2", "3", "a"]
        assert list(result.sizes) == [counts[key] for key in result.keys]
        assert torch.equal(result.data.y, results[0].data.y)
        assert torch.allclose(result.posterior.loc, results[0].posterior.loc, atol=1e-6)


def test_parquet_integer_keys_read_as_their_digits(tmp_path, shipped_guide, columns):
    path = tmp_path / "ints.parquet"
    frame = _keyed_frame(shipped_guide.family, [12] * 5 + [7] * 6 + [100] * 4)
    frame.to_parquet(path, row_group_size=4)
    data = read_groups(Table(path, chunk_rows=3), columns, "g")
    assert list(data.keys) == ["7", "12", "100"] and list(data.sizes) == [6, 5, 4]


def test_natural_order_of_keys(tmp_path, shipped_guide, columns):
    path = tmp_path / "schools.csv"
    keys = ["s10", "s2", "s1", "S3", "s02"] * 3
    _keyed_frame(shipped_guide.family, keys).to_csv(path, index=False)
    assert list(read_groups(Table(path), columns, "g").keys) == ["S3", "s1", "s02", "s2", "s10"]


def test_missing_value_markers_are_keys_like_in_parquet(tmp_path, shipped_guide, columns):
    # marker i has i + 1 rows, interleaved, so that each group's size and rows are checked
    keys = [key for i in range(len(MARKERS)) for key in MARKERS[i:]]
    keys = list(np.random.default_rng(1).permutation(keys))
    frame = _keyed_frame(shipped_guide.family, keys, seed=2)
    frame.to_csv(tmp_path / "markers.csv", index=False)
    frame.to_parquet(tmp_path / "markers.parquet")
    reference = read_groups(Table(tmp_path / "markers.parquet"), columns, "g")
    assert sorted(reference.keys) == sorted(MARKERS)
    for index, key in enumerate(reference.keys):
        assert reference.sizes[index] == MARKERS.index(key) + 1
        expected = torch.tensor(frame.loc[frame["g"] == key, "y"].to_numpy(), dtype=torch.float32)
        assert torch.equal(reference.group(index)[1], expected)
    for rows in (1, 4, 10_000):
        data = read_groups(Table(tmp_path / "markers.csv", chunk_rows=rows), columns, "g")
        assert list(data.keys) == list(reference.keys)
        assert list(data.sizes) == list(reference.sizes)
        assert torch.equal(data.x, reference.x) and torch.equal(data.y, reference.y)


@pytest.mark.parametrize("marker", MARKERS)
def test_a_marker_in_a_numeric_column_is_still_missing(tmp_path, shipped_guide, columns, marker):
    path = tmp_path / "holes.csv"
    frame = _keyed_frame(shipped_guide.family, ["a", "b", "b", "a"]).astype({"x3": object})
    frame.loc[2, "x3"] = marker
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"column 'x3' of holes\.csv has 1 missing"):
        read_groups(Table(path, chunk_rows=2), columns, "g")


@pytest.mark.parametrize(
    ("suffix", "cell"), [(".csv", ""), (".parquet", None), (".parquet", np.nan)]
)
def test_a_missing_key_names_its_row(tmp_path, shipped_guide, columns, suffix, cell):
    path = tmp_path / f"holes{suffix}"
    keys = [1.5, 2.5, 2.5, 1.5] if cell is np.nan else ["a", "b", "b", "a"]
    frame = _keyed_frame(shipped_guide.family, keys)
    frame.loc[2, "g"] = cell
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=rf"group column 'g' of holes{suffix} .* data row 3"):
        read_groups(Table(path, chunk_rows=2), columns, "g")


def test_keys_are_the_coordinates_of_the_netcdf_file(tmp_path, shipped_guide, columns):
    import arviz as az

    path = tmp_path / "keys.csv"
    _keyed_frame(shipped_guide.family, ["007", "7", "07"] * 6).to_csv(path, index=False)
    result = grouped_posteriors(shipped_guide, Table(path), columns, group="g")
    inference_data(shipped_guide, result, num_samples=20).to_netcdf(tmp_path / "k.nc")
    idata = az.from_netcdf(tmp_path / "k.nc")
    assert [str(key) for key in idata.posterior["group"].values] == ["007", "07", "7"]
    assert [str(key) for key in idata.sample_stats["group"].values] == ["007", "07", "7"]
