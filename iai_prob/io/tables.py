"""CSV and Parquet files read in chunks of rows, so files larger than memory stream.

A :class:`Table` knows its columns and row count without loading the data, checks the
columns a caller asks for (a wrong name is a ``ValueError`` naming the column, the
option it came from and the columns that exist), and yields pandas DataFrames of at
most ``chunk_rows`` rows holding only the requested columns: ``pandas.read_csv(...,
chunksize=...)`` for CSV (also ``.csv.gz``, ``.tsv``) and
``pyarrow.parquet.ParquetFile.iter_batches`` for Parquet. Memory is
``O(chunk_rows × columns)`` whatever the file size.

Columns named in ``text`` (group keys) are read as the file's text, never as numbers:
CSV cells verbatim (``"007"``, ``"01"``, ``"1.0"`` stay distinct from ``"7"`` and
``"1"``, whatever ``chunk_rows`` is, since nothing is inferred per chunk), Parquet
columns cast to strings (an integer column ``7`` reads as ``"7"``). In a CSV only an
empty cell of a text column is missing: pandas' missing-value markers (``NA``,
``None``, ``nan``, ``null``, ``N/A``, …) are ordinary text there, as the same strings
are in a Parquet string column (``NA`` may be Namibia), while the other columns keep
pandas' markers (``NA`` in a numeric column is still NaN). A file that cannot
be read as its name says (not UTF-8, a ``.csv.gz`` that is not gzip or a gzip file named
``.csv``, malformed rows, a damaged Parquet file, duplicate column names, no rows) is a
one-line ``ValueError`` naming the file.
"""

from __future__ import annotations

import gzip
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FORMATS", "Table"]

FORMATS = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
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


_GZIP_MAGIC = b"\x1f\x8b"


def _check_compression(path: Path, format: str) -> None:
    """Refuse an empty text file and a ``.gz`` name that disagrees with the content."""
    if format == "parquet":
        return
    with open(path, "rb") as file:
        head = file.read(2)
    if not head:
        raise ValueError(f"data file {path.name!r} is empty: no header line, no rows")
    named_gzip = path.name.lower().endswith(".gz")
    if named_gzip and head != _GZIP_MAGIC:
        raise ValueError(
            f"data file {path.name!r} is not gzip-compressed although its name ends in .gz; "
            f"rename it to {path.name[:-3]!r}"
        )
    if not named_gzip and head == _GZIP_MAGIC:
        raise ValueError(
            f"data file {path.name!r} is gzip-compressed although its name does not end in "
            f".gz; rename it to {path.name + '.gz'!r}"
        )


def _missing_markers(columns: Sequence[str], text: Sequence[str]) -> dict[str, set[str]]:
    """``read_csv``'s ``na_values`` (with ``keep_default_na=False``): the cells each column
    reads as missing. A text column: only the empty cell; any other: pandas' defaults.

    ``keep_default_na`` applies to every column and pandas has no public name for its
    default markers, so they are taken from the set ``read_csv`` itself uses
    (``pandas._libs.parsers.STR_NA_VALUES``, in every pandas this package supports): the
    numeric columns see exactly the markers they saw before.
    """
    from pandas._libs.parsers import STR_NA_VALUES

    return {name: {""} if name in text else set(STR_NA_VALUES) for name in columns}


def _as_text(column):
    """A pyarrow column as strings; nulls (and NaN) stay missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    missing = pc.is_null(column, nan_is_null=True)
    return pc.if_else(missing, pa.scalar(None, pa.string()), column.cast(pa.string()))


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
        _check_compression(self.path, self.format)
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

    @contextmanager
    def _reading(self):
        """Turn the readers' errors about the file's content into one line naming it."""
        import pandas as pd
        import pyarrow as pa

        name = self.path.name
        try:
            yield
        except UnicodeDecodeError as error:
            byte = error.object[error.start : error.start + 1].hex()
            raise ValueError(
                f"data file {name!r} is not UTF-8 text (it holds byte 0x{byte} where UTF-8 "
                "does not allow it); save it as UTF-8, e.g. iconv -f latin1 -t utf-8"
            ) from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            reason = str(error).strip().splitlines()[0]
            raise ValueError(
                f"data file {name!r} is not a well-formed {self.format}: {reason}"
            ) from None
        except (EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise ValueError(
                f"data file {name!r}: its gzip stream is truncated or damaged ({error})"
            ) from None
        except pa.ArrowException as error:
            reason = str(error).strip().splitlines()[0]
            raise ValueError(
                f"data file {name!r} is not a readable Parquet file: {reason}"
            ) from None

    def _header(self) -> tuple[list[str], list[str]]:
        """The column names as pandas/pyarrow give them, and as the file spells them."""
        if self.format == "parquet":
            names = list(self._parquet().schema_arrow.names)
            return names, names
        import pandas as pd

        options = {"sep": self._separator, "nrows": 0}
        names = [str(c) for c in pd.read_csv(self.path, **options).columns]
        raw = pd.read_csv(
            self.path, **options | {"nrows": 1}, header=None, dtype=str, keep_default_na=False
        )
        return names, list(raw.iloc[0])

    @property
    def columns(self) -> list[str]:
        """Column names, read from the CSV header or the Parquet schema.

        :raises ValueError: two columns share a name (pandas would silently rename the
            second ``x.1``, so ``--x x`` would not say which one it means).
        """
        if self._columns is None:
            with self._reading():
                names, spelled = self._header()
            counts = Counter(name for name in spelled if name != "")
            for name, count in counts.items():
                if count > 1:
                    raise ValueError(
                        f"data file {self.path.name!r}: column {name!r} appears {count} times in "
                        "its header; give each column its own name"
                    )
            self._columns = names
        return self._columns

    @property
    def num_rows(self) -> int:
        """Number of data rows: Parquet metadata, or one streaming pass over a CSV column."""
        if self._num_rows is None:
            if self.format == "parquet":
                with self._reading():
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

    def chunks(self, columns: Sequence[str], *, text: Sequence[str] = ()) -> Iterator:
        """Yield pandas DataFrames of at most ``chunk_rows`` rows with only ``columns``.

        :param text: columns (among ``columns``) read as the file's text (see the module
            docstring); only an empty CSV cell (or a Parquet null) is missing there, ``NA``,
            ``None``, ``null``, … are text.
        :raises ValueError: the file cannot be read, or it has no rows.
        """
        columns = list(dict.fromkeys(columns))
        rows = 0
        with self._reading():
            for chunk in self._read(columns, list(text)):
                if len(chunk):  # a header-only CSV gives one empty chunk of text columns
                    rows += len(chunk)
                    yield chunk
        if not rows:
            what = "only a header" if self.format != "parquet" else "an empty table"
            raise ValueError(f"data file {self.path.name!r} has no rows ({what})")

    def _read(self, columns: list[str], text: list[str]) -> Iterator:
        if self.format == "parquet":
            import pyarrow as pa

            for batch in self._parquet().iter_batches(batch_size=self.chunk_rows, columns=columns):
                if text:
                    arrays = [
                        _as_text(batch.column(name)) if name in text else batch.column(name)
                        for name in batch.schema.names
                    ]
                    batch = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
                yield batch.to_pandas()[columns]
        else:
            import pandas as pd

            # every column is tokenized (the unused ones as text, never converted): with
            # ``usecols`` pandas drops the extra fields of a row longer than the header
            # without a word, so a malformed row would be read as a well-formed one
            unused = [name for name in self.columns if name not in columns]
            reader = pd.read_csv(
                self.path,
                sep=self._separator,
                chunksize=self.chunk_rows,
                dtype=dict.fromkeys([*unused, *text], str),
                keep_default_na=False,
                na_values=_missing_markers(self.columns, text),
            )
            with reader:
                for chunk in reader:
                    yield chunk[columns]
