"""Reading one raw table (CSV/TSV with any delimiter, with or without header, plain, gz or zip; or Parquet).

Text files are read with every column as a string: types come later, column by column, from the dataset config, so
that a value that does not fit is reported with its column, row and the config key that declared it.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tower_platform.datasets.config import TableSource
from tower_platform.errors import InputError


def table_path(spec: TableSource, base_dir: Path, *, key: str, config_path: Path | None) -> Path:
    path = (base_dir / spec.path).resolve()
    if not path.exists():
        raise InputError(
            f"Dataset config {config_path}: key '{key}.path' names {path}, which does not exist; "
            "fix the path (it is relative to the config's source folder) or pass --source PATH."
        )
    return path


def read_table(spec: TableSource, base_dir: Path, *, key: str, needed: list[str], config_path: Path | None) -> tuple[pa.Table, Path]:
    """The table at ``spec.path`` with at least the ``needed`` source columns; refuses a missing column or no rows."""
    path = table_path(spec, base_dir, key=key, config_path=config_path)
    fmt = spec.format or ("parquet" if path.suffix.lower() in (".parquet", ".pq") or path.is_dir() else "csv")
    where = f"Dataset config {config_path}: key '{key}'"
    try:
        if fmt == "parquet":
            table = pq.read_table(path)
        else:
            table = _read_text(spec, path, needed=needed)
    except (pa.ArrowInvalid, OSError, UnicodeError, zipfile.BadZipFile) as exc:
        detail = " ".join(str(exc).split())[:300]  # one line: parser messages quote the offending row
        raise InputError(
            f"{where}: {path} cannot be read as {fmt} ({detail}); fix the file or its format, delimiter or encoding keys."
        ) from exc
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise InputError(
            f"{where}: column '{missing[0]}' is not in {path} (columns found: {', '.join(table.column_names)}); "
            "name an existing column in the config (or set 'columns' for a file without header)."
        )
    if table.num_rows == 0:
        raise InputError(f"{where}: {path} has no rows; the table needs at least one row.")
    return table.select(needed), path


def _read_text(spec: TableSource, path: Path, *, needed: list[str]) -> pa.Table:
    delimiter = spec.delimiter or ("\t" if _stem_suffix(path) in (".tsv", ".tab") else ",")
    source: object = str(path)
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise InputError(f"Archive {path} holds {len(members)} files; a zip source must hold exactly one table.")
            source = io.BytesIO(archive.read(members[0]))
    names = list(spec.columns) if spec.columns else None
    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if spec.quoting else False)
    if names is None:
        peek = io.BytesIO(source.getvalue()) if isinstance(source, io.BytesIO) else str(source)
        with pacsv.open_csv(peek, read_options=pacsv.ReadOptions(encoding=spec.encoding), parse_options=parse) as reader:
            names = reader.schema.names
    include = [c for c in needed if names is None or c in names]
    return pacsv.read_csv(
        source,
        read_options=pacsv.ReadOptions(
            encoding=spec.encoding,
            column_names=list(spec.columns) if spec.columns else None,
            skip_rows=1 if (spec.columns and spec.header) else 0,
        ),
        parse_options=parse,
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in include}, include_columns=include, strings_can_be_null=False
        ),
    )


def _stem_suffix(path: Path) -> str:
    """The data suffix under a compression suffix: ``u.data.tsv.gz`` -> ``.tsv``."""
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in (".gz", ".zip", ".bz2"):
        suffixes.pop()
    return suffixes[-1] if suffixes else ""
