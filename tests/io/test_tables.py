"""Table: chunked CSV/Parquet reading, column checks, conversion to tensors."""

import numpy as np
import pandas as pd
import pytest
import torch

from iai_prob.io import Columns, Table, minibatches


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"a": rng.normal(size=250), "b": rng.normal(size=250), "y": rng.normal(size=250)}
    )


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".csv.gz", ".parquet"])
def test_chunks_reassemble_the_file(tmp_path, frame, suffix):
    path = tmp_path / f"data{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path, row_group_size=100)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    table = Table(path, chunk_rows=64)
    assert table.columns == ["a", "b", "y"]
    assert table.num_rows == 250
    chunks = list(table.chunks(["y", "a"]))
    assert all(len(chunk) <= 64 for chunk in chunks)
    assert all(list(chunk.columns) == ["y", "a"] for chunk in chunks)
    pd.testing.assert_frame_equal(
        pd.concat(chunks, ignore_index=True), frame[["y", "a"]], check_exact=False, rtol=1e-5
    )


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        Table(tmp_path / "nope.csv")
    (tmp_path / "data.xlsx").write_text("a")
    with pytest.raises(ValueError, match="unknown format"):
        Table(tmp_path / "data.xlsx")


def test_wrong_column_names_the_column_and_option(tmp_path, frame):
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ValueError, match=r"--x: no column 'c' in d.csv \(its columns: a, b, y\)"):
        Table(tmp_path / "d.csv").require(["a", "c"], option="--x")


def test_columns_refuse_text_and_missing_values(tmp_path):
    frame = pd.DataFrame({"a": [1.0, np.nan, 2.0], "s": ["u", "v", "w"], "y": [0.0, 1.0, 2.0]})
    with pytest.raises(ValueError, match=r"column 'a' of f\.csv has 1 missing"):
        Columns(("a",), ("y",)).tensors(frame, source="f.csv")
    with pytest.raises(ValueError, match=r"column 's' of f\.csv holds"):
        Columns(("s",), ("y",)).tensors(frame, source="f.csv")
    with pytest.raises(ValueError, match="whole numbers"):
        Columns((), ("a",), torch.long).tensors(frame.fillna(0.5), source="f.csv")


def test_columns_shapes():
    frame = pd.DataFrame({"a": [1.0, 2.0], "y0": [1, 0], "y1": [3, 4]})
    x, y = Columns(("a",), ("y0",)).tensors(frame)
    assert x.shape == (2, 1) and y.shape == (2,) and y.dtype == torch.get_default_dtype()
    x, y = Columns((), ("y0", "y1"), torch.long).tensors(frame)
    assert x.shape == (2, 0) and y.tolist() == [[1, 3], [0, 4]] and y.dtype == torch.long


def test_minibatches_cut_across_chunks(tmp_path, frame):
    frame.to_csv(tmp_path / "d.csv", index=False)
    batches = list(
        minibatches(Table(tmp_path / "d.csv", chunk_rows=37), Columns.of(["a"], "y"), 64)
    )
    assert [len(x) for x, _ in batches] == [64, 64, 64, 58]
    y = torch.cat([y for _, y in batches])
    assert torch.allclose(y, torch.tensor(frame["y"].to_numpy(), dtype=y.dtype), atol=1e-6)


def test_only_an_empty_cell_is_missing_in_a_text_column(tmp_path):
    from pandas._libs.parsers import STR_NA_VALUES

    markers = sorted(STR_NA_VALUES - {""})
    lines = ["t,a,unused", '"",1,x', ",2,x", *(f"{m},{m},{m}" for m in markers)]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    for rows in (1, 3, 100):
        table = Table(tmp_path / "m.csv", chunk_rows=rows)
        frame = pd.concat(table.chunks(["t", "a"], text=["t"]), ignore_index=True)
        assert frame["t"].isna().tolist() == [True, True] + [False] * len(markers)
        assert frame["t"][2:].tolist() == markers
        assert frame["a"].tolist()[:2] == [1.0, 2.0] and frame["a"][2:].isna().all()
        # not asked to be text: pandas' markers, as before
        assert pd.concat(table.chunks(["t"]), ignore_index=True)["t"].isna().all()
