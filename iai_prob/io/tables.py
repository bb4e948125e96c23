"""CSV and Parquet files read in chunks of rows, so files larger than memory stream.

A :class:`Table` knows its columns and row count without loading the data, checks the
columns a caller asks for (a wrong name is a ``ValueError`` naming the column, the
option it came from and the columns that exist), and yields pandas DataFrames of at
most ``chunk_rows`` rows holding only the requested columns: ``pandas.read_csv(...,
chunksize=...)`` for CSV (also ``.csv.gz``, ``.tsv``) and
``pyarrow.parquet.ParquetFile.iter_batches`` for Parquet. Memory is
``O(chunk_rows × columns)`` whatever the file size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["FORMATS", "Table"]

FORMATS = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
"""File suffixes :class:`Table` reads, and the format each means."""


def _format_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    return None


class Table:
    """A CSV or Parquet file, read lazily in chunks of rows.

    :param path: the file; its suffix picks the reader (see :data:`FORMATS`).
    :param int chunk_rows: rows per chunk yielded by :meth:`chunks`.
    :raises FileNotFoundError: the file does not exist.
    :raises ValueError: the suffix is not a known format, or ``chunk_rows`` < 1.
    """

    def __init__(self, path, *, chunk_rows: int = 65_536):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"data file {str(self.path)!r} does not exist")
        self.format = _format_of(self.path)
        if self.format is None:
            raise ValueError(
                f"data file {self.path.name!r}: unknown format; use one of {sorted(FORMATS)}"
            )
        if int(chunk_rows) != chunk_rows or chunk_rows < 1:
            raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
        self.chunk_rows = int(chunk_rows)
        self._columns: list[str] | None = None
        self._num_rows: int | None = None

    def __repr__(self) -> str:
        return f"Table({str(self.path)!r}, format={self.format!r})"

    @property
    def _separator(self) -> str:
        return "\t" if self.format == "tsv" else ","

    def _parquet(self):
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.path)

    @property
    def columns(self) -> list[str]:
        """Column names, read from the CSV header or the Parquet schema."""
        if self._columns is None:
            if self.format == "parquet":
                self._columns = list(self._parquet().schema_arrow.names)
            else:
                import pandas as pd

                header = pd.read_csv(self.path, sep=self._separator, nrows=0)
                self._columns = [str(c) for c in header.columns]
        return self._columns

    @property
    def num_rows(self) -> int:
        """Number of data rows: Parquet metadata, or one streaming pass over a CSV column."""
        if self._num_rows is None:
            if self.format == "parquet":
                self._num_rows = int(self._parquet().metadata.num_rows)
            else:
                first = self.columns[:1]
                self._num_rows = sum(len(chunk) for chunk in self.chunks(first))
        return self._num_rows

    def require(self, columns: Sequence[str], *, option: str) -> list[str]:
        """Return ``columns`` as a list, or raise a ``ValueError`` naming a missing one.

        ``option`` names where the columns came from (``"--x"``, ``"x_columns"``) so the
        message points at what to fix.
        """
        columns = [str(c) for c in columns]
        known = self.columns
        for column in columns:
            if column not in known:
                listing = ", ".join(known[:20]) + (", …" if len(known) > 20 else "")
                raise ValueError(
                    f"{option}: no column {column!r} in {self.path.name} (its columns: {listing})"
                )
        return columns

    def chunks(self, columns: Sequence[str]) -> Iterator:
        """Yield pandas DataFrames of at most ``chunk_rows`` rows with only ``columns``."""
        columns = list(dict.fromkeys(columns))
        if self.format == "parquet":
            for batch in self._parquet().iter_batches(batch_size=self.chunk_rows, columns=columns):
                yield batch.to_pandas()
        else:
            import pandas as pd

            reader = pd.read_csv(
                self.path, sep=self._separator, usecols=columns, chunksize=self.chunk_rows
            )
            with reader:
                for chunk in reader:
                    yield chunk[columns]
