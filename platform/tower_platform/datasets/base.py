"""The adapter contract: what a dataset adapter returns, and the checked readers adapters build it with.

An adapter reads one dataset's raw files and returns a :class:`RawDataset` in canonical columns; everything after
that (Feast source tables, snapshots, schema.json) is shared platform code in :mod:`tower_platform.datasets.ingest`.
A new dataset needs an adapter class registered in :data:`tower_platform.datasets.ADAPTERS` and a config file.

Canonical tables:
    interactions  user_id string, item_id string, event_timestamp timestamp[us, UTC], rating float64 (nullable)
    items         item_id string, title string (nullable), genres list<string>, release_year int64 (nullable)
    users         user_id string plus demographic columns of type string / int64 / float64 (optional)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tower_platform.errors import InputError

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

_INT_PATTERN = r"^\s*[-+]?\d+\s*$"
_FLOAT_PATTERN = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


@dataclass(frozen=True)
class RawDataset:
    """One dataset in canonical columns, plus where it came from (for messages and the fingerprint)."""

    interactions: pa.Table
    items: pa.Table
    users: pa.Table | None
    files: tuple[Path, ...]  # every raw file read, for the source fingerprint
    interactions_file: Path
    # canonical interaction column -> the column's name in interactions_file, so messages name the real column
    source_columns: dict[str, str] = field(default_factory=dict)


class DatasetAdapter(Protocol):
    """Reads the raw files of one dataset under ``source`` (a folder) into canonical tables."""

    name: ClassVar[str]
    max_rating: ClassVar[float]  # highest rating of the scale, for the ``weight: rating`` method

    def read(self, source: Path) -> RawDataset: ...


def require_file(folder: Path, name: str) -> Path:
    """The path of a raw file, or an InputError naming it."""
    if not folder.exists():
        raise InputError(f"Dataset source {folder} does not exist; pass the dataset folder with --source PATH.")
    if not folder.is_dir():
        raise InputError(f"Dataset source {folder} is not a folder; pass the folder that holds {name}.")
    path = folder / name
    if not path.is_file():
        raise InputError(f"Dataset file {path} does not exist; the source folder must hold {name}.")
    return path


def read_delimited(
    path: Path,
    *,
    columns: list[str],
    header: bool = True,
    delimiter: str = ",",
    encoding: str = "utf8",
    quoting: bool = True,
) -> pa.Table:
    """Read a delimited text file as string columns (casting comes later, column by column, with clear messages).

    ``columns``: the columns that must be present (header files) or the names of all columns (headerless files).
    """
    if path.stat().st_size == 0:
        raise InputError(f"File {path} is empty; it needs a header and at least one row.")
    read_options = pacsv.ReadOptions(
        encoding=encoding,
        column_names=None if header else columns,
    )
    names = columns
    if header:
        try:
            names = _header_names(path, delimiter=delimiter, encoding=encoding)
        except UnicodeDecodeError as exc:
            raise InputError(f"File {path} is not {encoding} text ({exc}); save it as {encoding}.") from exc
        missing = [c for c in columns if c not in names]
        if missing:
            raise InputError(
                f"File {path} has no column '{missing[0]}' (columns found: {', '.join(names)}); "
                f"the file needs columns {', '.join(columns)}."
            )
    try:
        table = pacsv.read_csv(
            path,
            read_options=read_options,
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoting else False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names},
                include_columns=columns,
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise InputError(f"File {path} cannot be parsed as {_delimiter_name(delimiter)} text ({exc}); fix the file.") from exc
    if table.num_rows == 0:
        raise InputError(f"File {path} has no rows; it needs at least one row below the header.")
    return table


def cast_int64(table: pa.Table, column: str, *, path: Path) -> pa.Array:
    return _cast_checked(table, column, path=path, pattern=_INT_PATTERN, target=pa.int64(), what="an integer")


def cast_float64(table: pa.Table, column: str, *, path: Path) -> pa.Array:
    return _cast_checked(table, column, path=path, pattern=_FLOAT_PATTERN, target=pa.float64(), what="a number")


def cast_epoch_seconds(table: pa.Table, column: str, *, path: Path) -> pa.Array:
    """Unix time in seconds -> timestamp[us, UTC]."""
    seconds = _cast_checked(
        table, column, path=path, pattern=_INT_PATTERN, target=pa.int64(), what="a Unix time in seconds"
    )
    micros = pc.multiply_checked(seconds, pa.scalar(1_000_000, pa.int64()))
    return micros.cast(TIMESTAMP_TYPE)


def non_empty_strings(table: pa.Table, column: str, *, path: Path) -> pa.Array:
    """A string id column; blank values are refused."""
    values = pc.utf8_trim_whitespace(table.column(column).combine_chunks())
    blank = np.flatnonzero(np.asarray(pc.equal(values, "").fill_null(True)))
    if blank.size:
        raise InputError(
            f"File {path}: column '{column}' is empty on data row {int(blank[0]) + 1}; every row needs a value there."
        )
    return values


def drop_list_values(lists: pa.Array | pa.ChunkedArray, drop: set[str]) -> pa.ListArray:
    """Remove the given values from every list (vectorised over the flattened values); null lists become []."""
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    values = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy()
    keep = np.asarray(pc.invert(pc.is_in(values, value_set=pa.array(sorted(drop), pa.string()))).fill_null(False))
    return lists_from_parents(pc.filter(values, pa.array(keep)), parents[keep], length=len(lists))


def lists_from_parents(values: pa.Array, parents: np.ndarray, *, length: int) -> pa.ListArray:
    """Build a list array of ``length`` rows from flat values and the (non-decreasing) row index of each value."""
    counts = np.bincount(parents, minlength=length).astype(np.int64)  # (length,)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)  # (length + 1,)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _cast_checked(table: pa.Table, column: str, *, path: Path, pattern: str, target: pa.DataType, what: str) -> pa.Array:
    values = table.column(column).combine_chunks()
    ok = np.asarray(pc.match_substring_regex(values, pattern).fill_null(False))
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise InputError(
            f"File {path}: column '{column}' holds {values[row].as_py()!r} on data row {row + 1}, which is not "
            f"{what}; fix or remove that row."
        )
    try:
        return pc.cast(pc.utf8_trim_whitespace(values), target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"File {path}: column '{column}' cannot be read as {what} ({exc}); fix its values.") from exc


def _header_names(path: Path, *, delimiter: str, encoding: str) -> list[str]:
    with path.open("r", encoding=encoding, newline="") as handle:
        first = handle.readline().rstrip("\r\n")
    return [name.strip().strip('"') for name in first.split(delimiter)]


def _delimiter_name(delimiter: str) -> str:
    return {",": "comma-separated", "\t": "tab-separated", "|": "pipe-separated"}.get(delimiter, f"'{delimiter}'-separated")
