"""The generic tabular adapter: raw tables + the dataset config -> canonical tables. Nothing here knows a dataset.

Canonical tables (:class:`RawDataset`):
    interactions  user_id string, item_id string, event_timestamp timestamp[us, UTC], weight float64, and one float64
                  column per declared interaction value (``rating`` when the config names one)
    items         item_id string, ``display`` string when declared, one column per item attribute
    users         user_id string, one column per user attribute (optional)
Attribute columns: categorical string, multi_categorical list<string>, numeric float64.

A config's ``adapter: my_package.my_module:MyReader`` names a class whose ``read(config, base_dir)`` returns the raw
tables ``{"interactions": ..., "items": ..., "users": ...}`` with the source columns the config maps; the mapping,
types and checks below then apply to them exactly as to files (:func:`load_reader`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.datasets import layout
from tower_platform.datasets.config import Attribute, DatasetConfig, RowFilter, TableSource
from tower_platform.datasets.table_reader import read_table
from tower_platform.datasets.timestamp import parse_timestamps
from tower_platform.errors import ConfigError, InputError

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
GENERIC_ADAPTER = "tabular"
MAX_MAGNITUDE = 1e18  # numbers above it are refused: a sum over any real number of rows stays finite


@dataclass(frozen=True)
class RawDataset:
    interactions: pa.Table
    items: pa.Table
    users: pa.Table | None
    files: tuple[Path, ...] = ()  # every raw file read, for the source fingerprint
    missing_items: int = 0  # items of interactions absent from the items table (kept or dropped per config)
    paths: dict[str, Path] = field(default_factory=dict)  # role -> file read, for messages


class TableReader(Protocol):
    """Reads the raw tables of a dataset; the generic one reads files, a user's class reads anything."""

    def read(self, config: DatasetConfig, base_dir: Path) -> dict[str, pa.Table]: ...


class FileReader:
    """The tables named by the config's ``path`` keys (CSV/TSV, gz, zip or Parquet)."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.paths: dict[str, Path] = {}  # role -> file, for messages

    def read(self, config: DatasetConfig, base_dir: Path) -> dict[str, pa.Table]:
        tables: dict[str, pa.Table] = {}
        for role, spec in (("interactions", config.interactions), ("items", config.items), ("users", config.users)):
            if spec is None:
                continue
            table, path = read_table(spec, base_dir, key=role, needed=needed_columns(spec, role), config_path=config.path)
            tables[role] = table
            self.files.append(path)
            self.paths[role] = path
        return tables


def load_reader(config: DatasetConfig) -> TableReader:
    """The config's reader: the generic file reader, or a class named ``package.module:Class`` from the environment."""
    if config.adapter == GENERIC_ADAPTER:
        return FileReader()
    module_name, _, class_name = config.adapter.partition(":")
    where = f"Dataset config {config.path}: key 'adapter' names '{config.adapter}'"
    if not module_name or not class_name:
        raise ConfigError(f"{where}; use '{GENERIC_ADAPTER}' or a dotted path 'package.module:Class'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}, but module '{module_name}' cannot be imported ({exc}); install it or fix the path.") from exc
    cls = getattr(module, class_name, None)
    if cls is None or not callable(getattr(cls, "read", None)):
        raise ConfigError(f"{where}, but '{module_name}' has no class '{class_name}' with a read(config, base_dir) method; fix the name.")
    return cls()


def needed_columns(spec: TableSource, role: str) -> list[str]:
    cols: list[str] = []
    if role == "interactions":
        cols += [spec.user_id, spec.item_id, spec.timestamp.column, *([spec.rating] if spec.rating else []), *spec.values.values()]  # type: ignore[attr-defined]
        if not isinstance(spec.weight, (int, float)):  # type: ignore[attr-defined]
            cols.append(spec.weight.column)  # type: ignore[attr-defined]
        if spec.filter is not None:  # type: ignore[attr-defined]
            cols.append(spec.filter.column)  # type: ignore[attr-defined]
    else:
        cols.append(spec.id)  # type: ignore[attr-defined]
        if role == "items" and spec.display:  # type: ignore[attr-defined]
            cols.append(spec.display)  # type: ignore[attr-defined]
        for name, attribute in spec.attributes.items():  # type: ignore[attr-defined]
            cols += list(attribute.flags) if attribute.flags else [attribute.column or name]
    return list(dict.fromkeys(cols))


def read_dataset(config: DatasetConfig, base_dir: Path) -> RawDataset:
    """Raw tables (by the config's reader) -> canonical tables, every value checked against its declared kind."""
    reader = load_reader(config)
    tables = reader.read(config, base_dir)
    mapper = _Mapper(config, paths=getattr(reader, "paths", {}))
    for role in ("interactions", "items"):
        if not isinstance(tables.get(role), pa.Table) or tables[role].num_rows == 0:
            raise InputError(f"Dataset config {config.path}: the '{role}' table is empty or was not read; it needs at least one row.")
    interactions = mapper.interactions(tables["interactions"])
    items = mapper.items(tables["items"])
    interactions, items, missing = mapper.reconcile(interactions, items)
    users = mapper.users(tables["users"]) if config.users is not None and "users" in tables else None
    files = tuple(getattr(reader, "files", ()))
    return RawDataset(interactions=interactions, items=items, users=users, files=files, missing_items=missing, paths=mapper.paths)


class _Mapper:
    def __init__(self, config: DatasetConfig, *, paths: dict[str, Path]) -> None:
        self.config = config
        self.path = config.path
        self.paths = paths

    def fail(self, key: str, column: str, problem: str, fix: str) -> InputError:
        table = self.paths.get(key.split(".")[0])
        where = f" of {table}" if table is not None else ""
        return InputError(f"Dataset config {self.path}: key '{key}', column '{column}'{where}: {problem}; {fix}.")

    # ------------------------------------------------------------------ interactions
    def interactions(self, raw: pa.Table) -> pa.Table:
        spec = self.config.interactions
        assert spec is not None
        if spec.filter is not None:
            raw = raw.filter(self._filter_mask(raw, spec.filter))
            if raw.num_rows == 0:
                raise self.fail("interactions.filter", spec.filter.column, "no interaction passes the filter", "loosen the filter")
        columns: dict[str, pa.Array] = {
            layout.USER_KEY: self.ids(raw, spec.user_id, key="interactions.user_id"),
            layout.ITEM_KEY: self.ids(raw, spec.item_id, key="interactions.item_id"),
            layout.TIMESTAMP_FIELD: parse_timestamps(
                raw.column(spec.timestamp.column), spec.timestamp, fail=lambda p, f: self.fail("interactions.timestamp", spec.timestamp.column, p, f)
            ),
        }
        if isinstance(spec.weight, (int, float)):
            columns["weight"] = pa.array(np.full(raw.num_rows, float(spec.weight)), pa.float64())
        else:
            weight = self.numbers(raw, spec.weight.column, key="interactions.weight.column")
            columns["weight"] = pc.fill_null(pc.divide(weight, spec.weight.divide_by), 1.0)
        values = {**({"rating": spec.rating} if spec.rating else {}), **spec.values}
        for name, column in values.items():
            columns[name] = self.numbers(raw, column, key=f"interactions.values.{name}" if name in spec.values else "interactions.rating")
        return pa.table(columns)

    def _filter_mask(self, raw: pa.Table, row_filter: RowFilter) -> pa.Array:
        ops = {">=": pc.greater_equal, ">": pc.greater, "<=": pc.less_equal, "<": pc.less, "==": pc.equal, "!=": pc.not_equal}
        if isinstance(row_filter.value, str):
            values = self.text(raw.column(row_filter.column).combine_chunks(), key="interactions.filter.column",
                               column=row_filter.column)
        else:
            values = self.numbers(raw, row_filter.column, key="interactions.filter.column")
        return ops[row_filter.op](values, row_filter.value).fill_null(False)

    # ------------------------------------------------------------------ items and users
    def items(self, raw: pa.Table) -> pa.Table:
        spec = self.config.items
        assert spec is not None
        columns: dict[str, pa.Array] = {layout.ITEM_KEY: self.ids(raw, spec.id, key="items.id")}
        if spec.display:
            columns[layout.DISPLAY_FIELD] = self.text(raw.column(spec.display).combine_chunks(), key="items.display",
                                                      column=spec.display)
        for name, attribute in spec.attributes.items():
            columns[name] = self.attribute(raw, name, attribute, key=f"items.attributes.{name}")
        table = pa.table(columns)
        self._refuse_duplicates(table, layout.ITEM_KEY, key="items.id", column=spec.id)
        return table

    def users(self, raw: pa.Table) -> pa.Table:
        spec = self.config.users
        assert spec is not None
        columns: dict[str, pa.Array] = {layout.USER_KEY: self.ids(raw, spec.id, key="users.id")}
        for name, attribute in spec.attributes.items():
            columns[name] = self.attribute(raw, name, attribute, key=f"users.attributes.{name}")
        table = pa.table(columns)
        self._refuse_duplicates(table, layout.USER_KEY, key="users.id", column=spec.id)
        return table

    def reconcile(self, interactions: pa.Table, items: pa.Table) -> tuple[pa.Table, pa.Table, int]:
        """Items referenced by interactions but absent from the items table: keep (empty attributes), drop or refuse."""
        spec = self.config.items
        assert spec is not None
        known = items.column(layout.ITEM_KEY).combine_chunks()
        listed = pc.is_in(interactions.column(layout.ITEM_KEY), value_set=known)
        if pc.all(listed).as_py():
            return interactions, items, 0
        unlisted = pc.unique(pc.filter(interactions.column(layout.ITEM_KEY), pc.invert(listed)).combine_chunks())
        count = len(unlisted)
        if spec.missing == "error":
            raise self.fail(
                "items.missing", spec.id, f"{count} items of the interactions are not in the items table (e.g. '{unlisted[0].as_py()}')",
                "add them to the items table or set items.missing to keep or drop",
            )
        if spec.missing == "drop":
            interactions = interactions.filter(listed)
            if interactions.num_rows == 0:
                raise self.fail("items.missing", spec.id, "no interaction refers to a listed item", "check the item id columns")
            return interactions, items, count
        extra = pa.table({name: pa.nulls(count, items.schema.field(name).type) if name != layout.ITEM_KEY else unlisted
                          for name in items.column_names})
        return interactions, pa.concat_tables([items, extra]), count

    def _refuse_duplicates(self, table: pa.Table, key_column: str, *, key: str, column: str) -> None:
        counts = table.group_by([key_column]).aggregate([([], "count_all")])
        repeated = counts.filter(pc.greater(counts.column("count_all"), 1))
        if repeated.num_rows:
            raise self.fail(key, column, f"{repeated.num_rows} ids occur more than once (e.g. '{repeated.column(0)[0].as_py()}')",
                            "keep one row per id")

    # ------------------------------------------------------------------ columns
    def text(self, values: pa.Array, *, key: str, column: str) -> pa.Array:
        """A column as strings (numbers, booleans, dates and UTF-8 bytes convert); lists, structs and bytes that are
        not UTF-8 are refused naming the key and the column."""
        if pa.types.is_nested(values.type):
            raise self.fail(key, column, f"holds {values.type} values", "give one text or number per row")
        try:
            return pc.cast(values, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            problem = "holds bytes that are not UTF-8 text" if pa.types.is_binary(values.type) else \
                f"holds {values.type} values that cannot be read as text ({' '.join(str(exc).split())})"
            raise self.fail(key, column, problem, "re-encode the file as UTF-8 or declare its encoding") from None

    def ids(self, raw: pa.Table, column: str, *, key: str) -> pa.Array:
        """Ids are strings whatever their source type; nulls, NaN and blanks are refused with their count."""
        values = raw.column(column).combine_chunks()
        if pa.types.is_floating(values.type):
            numbers = values.to_numpy(zero_copy_only=False)  # (n,) NaN where null
            missing = np.isnan(numbers)
            whole = np.isfinite(numbers) & (np.abs(numbers) < 2**53) & (np.floor(numbers) == numbers)
            if whole[~missing].all():  # 12.0 -> "12"
                values = pa.array(np.where(missing, 0, numbers).astype(np.int64), pa.int64(), mask=missing)
            else:
                values = pa.array(numbers, pa.float64(), mask=missing)  # NaN is a missing id, not "nan"
        values = pc.utf8_trim_whitespace(self.text(values, key=key, column=column))
        blank = pc.or_kleene(pc.is_null(values), pc.equal(values, "")).fill_null(True)
        count = int(pc.sum(blank.cast(pa.int64())).as_py() or 0)
        if count:
            row = int(np.flatnonzero(np.asarray(blank))[0]) + 1
            raise self.fail(key, column, f"{count} rows have no id (first: data row {row})", "fill or remove those rows")
        return values

    def numbers(self, raw: pa.Table, column: str, *, key: str) -> pa.Array:
        """Numbers as float64 (empty cells and NaN are missing); text that is no number, infinities and magnitudes
        above :data:`MAX_MAGNITUDE` (sums and means of them would overflow) are refused with the first one."""
        values = raw.column(column).combine_chunks()
        if pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_boolean(values.type):
            result, shown = pc.cast(values, pa.float64()), values
        else:
            text = pc.utf8_trim_whitespace(self.text(values, key=key, column=column))
            text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
            ok = pc.or_kleene(pc.is_null(text), pc.match_substring_regex(text, r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")).fill_null(False)
            if not pc.all(ok).as_py():
                bad = np.flatnonzero(~np.asarray(ok))
                raise self.fail(key, column, f"{bad.size} values are not numbers (first: {text[int(bad[0])].as_py()!r} on data row {int(bad[0]) + 1})",
                                "declare the column with another kind or fix those values")
            result, shown = pc.cast(text, pa.float64()), text
        numbers = result.to_numpy(zero_copy_only=False)  # (n,) NaN where missing
        missing = np.isnan(numbers)
        huge = ~missing & ~(np.abs(np.where(missing, 0.0, numbers)) <= MAX_MAGNITUDE)
        if huge.any():
            first = int(np.flatnonzero(huge)[0])
            raise self.fail(key, column, f"{int(huge.sum())} values are infinite or larger than {MAX_MAGNITUDE:.0e} in "
                            f"magnitude (first: {shown[first].as_py()!r} on data row {first + 1})",
                            "fix or rescale those values")
        return pa.array(numbers, pa.float64(), mask=missing)

    def attribute(self, raw: pa.Table, name: str, attribute: Attribute, *, key: str) -> pa.Array:
        if attribute.flags:
            return self._from_flags(raw, attribute, key=key)
        column = attribute.column or name
        values = raw.column(column).combine_chunks()
        if attribute.extract is not None:
            text = self.text(values, key=key, column=column)
            values = pc.struct_field(pc.extract_regex(text, named_first_group(attribute.extract)), "value")
        if attribute.kind == "numeric":
            numbers = self.numbers(pa.table({column: values}), column, key=key)
            return pc.ln(pc.add(numbers, 1.0)) if attribute.log1p else numbers
        text = pc.utf8_trim_whitespace(self.text(values, key=key, column=column))
        if attribute.separator is None:
            drop = pc.is_in(text, value_set=pa.array([*attribute.drop, ""], pa.string()))
            return pc.if_else(drop, pa.scalar(None, pa.string()), text)
        lists = _drop_values(pc.split_pattern(text, attribute.separator), {*attribute.drop, ""})
        return lists if attribute.kind == "multi_categorical" else first_values(lists)

    def _from_flags(self, raw: pa.Table, attribute: Attribute, *, key: str) -> pa.Array:
        assert attribute.flags is not None
        flags = np.stack(
            [np.nan_to_num(self.numbers(raw, col, key=f"{key}.flags").to_numpy(zero_copy_only=False)) for col in attribute.flags], axis=1
        )  # (n, F) 0/1 flags
        rows, cols = np.nonzero(flags > 0)  # row-major: each row's values in flag order
        names = pa.array(list(attribute.flags.values()), pa.string())
        lists = lists_from_parents(names.take(pa.array(cols, pa.int64())), rows, length=raw.num_rows)
        lists = _drop_values(lists, set(attribute.drop))
        return lists if attribute.kind == "multi_categorical" else first_values(lists)


def named_first_group(pattern: str) -> str:
    """The pattern with its first capturing group named ``value`` (what pyarrow's extract_regex needs)."""
    escaped = False
    for i, char in enumerate(pattern):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(" and not pattern.startswith("?", i + 1):
            return f"{pattern[: i + 1]}?P<value>{pattern[i + 1 :]}"
        elif char == "(" and pattern.startswith("?P<", i + 1):
            return pattern[: i + 4] + "value" + pattern[pattern.index(">", i):]
    return f"(?P<value>{pattern})"


def _drop_values(lists: pa.Array, drop: set[str]) -> pa.ListArray:
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    values = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    parents = pc.list_parent_indices(lists).to_numpy()
    keep = np.asarray(pc.invert(pc.is_in(values, value_set=pa.array(sorted(drop), pa.string()))).fill_null(False))
    return lists_from_parents(pc.filter(values, pa.array(keep)), parents[keep], length=len(lists))


def lists_from_parents(values: pa.Array, parents: np.ndarray, *, length: int) -> pa.ListArray:
    """A list array of ``length`` rows from flat values and the (non-decreasing) row index of each value."""
    counts = np.bincount(parents, minlength=length).astype(np.int64)  # (length,)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)  # (length + 1,)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def first_values(lists: pa.ListArray) -> pa.Array:
    """The first value of each list; null for empty or null lists."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()  # (n,)
    starts = lists.offsets.to_numpy()[:-1]  # (n,) index into lists.values
    index = pa.array(np.where(lengths > 0, starts, 0), pa.int64(), mask=lengths == 0)
    return lists.values.take(index)
