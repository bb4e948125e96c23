"""A file that cannot be read as its name says is one ValueError naming the file."""

import gzip
import re

import numpy as np
import pandas as pd
import pytest
import torch

from iai_prob.io import Columns, Table, minibatches, read_groups

HEADER = "g,a,b,y\n"
ROWS = "u,1.0,2.0,0.5\nv,3.0,4.0,1.5\n"


def _read(path, *, group=None):
    """Everything a command reads: columns, row count, then the rows (grouped or not)."""
    table = Table(path, chunk_rows=1)
    columns = Columns.of(["a", "b"], "y")
    table.require(columns.names, option="--x")
    if group:
        return read_groups(table, columns, group)
    assert table.num_rows > 0
    return list(minibatches(table, columns, 2))


@pytest.mark.parametrize("group", [None, "g"])
def test_header_only_csv_has_no_rows(tmp_path, group):
    (tmp_path / "empty.csv").write_text(HEADER)
    with pytest.raises(ValueError, match=r"data file 'empty.csv' has no rows \(only a header\)"):
        _read(tmp_path / "empty.csv", group=group)


def test_first_chunk_of_a_header_only_csv(tmp_path):
    # what `iai infer` reads first to check the checkpoint against the columns
    (tmp_path / "empty.csv").write_text(HEADER)
    with pytest.raises(ValueError, match="has no rows"):
        next(Table(tmp_path / "empty.csv").chunks(["a", "y"]))


def test_parquet_without_rows(tmp_path):
    pd.DataFrame({"a": [], "b": [], "y": []}, dtype=float).to_parquet(tmp_path / "e.parquet")
    with pytest.raises(ValueError, match=r"data file 'e.parquet' has no rows"):
        list(Table(tmp_path / "e.parquet").chunks(["a", "y"]))


def test_an_empty_file(tmp_path):
    (tmp_path / "nothing.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"data file 'nothing.csv' is empty"):
        Table(tmp_path / "nothing.csv")


@pytest.mark.parametrize("where", ["header", "rows"])
def test_text_that_is_not_utf8(tmp_path, where):
    text = (HEADER.replace("g", "café") if where == "header" else HEADER + "café" + ROWS[1:]) + ROWS
    (tmp_path / "latin1.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=r"data file 'latin1.csv' is not UTF-8 text .*0xe9"):
        _read(tmp_path / "latin1.csv", group=None if where == "header" else "g")


def test_gz_name_without_gzip_content(tmp_path):
    (tmp_path / "plain.csv.gz").write_text(HEADER + ROWS)
    with pytest.raises(ValueError, match=r"'plain.csv.gz' is not gzip-compressed .* 'plain.csv'"):
        Table(tmp_path / "plain.csv.gz")


def test_gzip_content_without_gz_name(tmp_path):
    (tmp_path / "packed.csv").write_bytes(gzip.compress((HEADER + ROWS).encode()))
    with pytest.raises(ValueError, match=r"'packed.csv' is gzip-compressed .* 'packed.csv.gz'"):
        Table(tmp_path / "packed.csv")
    (tmp_path / "packed.tsv.gz").write_bytes(
        gzip.compress((HEADER + ROWS).replace(",", "\t").encode())
    )
    assert Table(tmp_path / "packed.tsv.gz").num_rows == 2  # the name it suggests is read


def test_truncated_gzip(tmp_path):
    packed = gzip.compress((HEADER + ROWS * 2000).encode())
    (tmp_path / "cut.csv.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match=r"data file 'cut.csv.gz': its gzip stream is truncated"):
        _read(tmp_path / "cut.csv.gz")


def test_malformed_csv_and_parquet(tmp_path):
    (tmp_path / "quote.csv").write_text(HEADER + ROWS + 'w,"1.0,2.0,3.0\n')
    with pytest.raises(ValueError, match=r"'quote.csv' is not a well-formed csv: .*EOF inside"):
        _read(tmp_path / "quote.csv")
    (tmp_path / "fake.parquet").write_text(HEADER + ROWS)
    with pytest.raises(ValueError, match=r"data file 'fake.parquet' is not a readable Parquet"):
        _read(tmp_path / "fake.parquet")


@pytest.mark.parametrize("group", [None, "g"])
def test_a_row_longer_than_the_header_is_refused(tmp_path, group):
    # read with only some columns, pandas would drop the extra fields of the last row
    # and take it as g=w, a=1, b=2, y=3
    (tmp_path / "ragged.csv").write_text(HEADER + ROWS + "w,1,2,3,4,5\n")
    with pytest.raises(ValueError, match=r"'ragged.csv' is not a well-formed csv: .*saw 6"):
        _read(tmp_path / "ragged.csv", group=group)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_duplicate_column_names(tmp_path, suffix):
    path = tmp_path / f"dups{suffix}"
    if suffix == ".csv":  # pandas alone would read the second 'a' as 'a.1'
        path.write_text("g,a,b,a,y\nu,1,2,3,0.5\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = [pa.array([1.0]), pa.array([2.0]), pa.array([3.0]), pa.array([0.5])]
        pq.write_table(pa.table(columns, names=["a", "b", "a", "y"]), path)
    with pytest.raises(ValueError, match=rf"'dups{suffix}': column 'a' appears 2 times"):
        _read(path)


@pytest.mark.parametrize(("column", "value"), [("a", 1e39), ("y", -2e39)])
def test_values_that_overflow_float32(tmp_path, column, value):
    frame = pd.DataFrame({"g": ["u", "v", "v"], "a": [1.0, 2.0, 3.0], "b": 0.0, "y": 0.5})
    frame.loc[2, column] = value
    frame.to_csv(tmp_path / "huge.csv", index=False)
    message = f"column '{column}' of huge.csv holds {value:.4g}, which overflows float32"
    with pytest.raises(ValueError, match=re.escape(message)):
        _read(tmp_path / "huge.csv", group="g")


def test_float32_limits_and_integer_observations():
    largest = float(np.finfo(np.float32).max)
    frame = pd.DataFrame({"a": [largest, -largest], "y": [1.0, 2.0**63]})
    x, _ = Columns(("a",), ("y",)).tensors(frame.assign(y=1.0))  # the largest float32 fits
    assert torch.isfinite(x).all()
    with pytest.raises(ValueError, match=r"column 'y' of the data holds 9.223e\+18, which over"):
        Columns(("a",), ("y",), torch.long).tensors(frame)
