"""The audit every training set passes: row parity, no feature row newer than its event, no leaked target.

It also reports null rates per feature and a fingerprint (sha256 of the table's content, the feature service names
and the time window), which the registry stores with a model version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.errors import TrainingSetAuditError

TimeWindow = tuple[datetime | None, datetime | None]


@dataclass(frozen=True)
class AuditReport:
    rows_in: int
    rows_out: int
    null_rates: dict[str, float]  # feature column -> share of rows with a null value
    future_rows: dict[str, int]  # feature view -> rows whose feature row is not strictly before the event
    leaked_rows: int  # rows whose recent items hold the target although the user had not met it before
    split_sizes: dict[str, int]
    fingerprint: str
    feature_services: tuple[str, ...]
    time_window: tuple[str | None, str | None]
    problems: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "split_sizes": dict(self.split_sizes),
            "null_rates": dict(self.null_rates),
            "future_rows": dict(self.future_rows),
            "leaked_rows": self.leaked_rows,
            "fingerprint": self.fingerprint,
            "feature_services": list(self.feature_services),
            "time_window": list(self.time_window),
            "problems": list(self.problems),
        }


def check_row_parity(*, rows_in: int, row_ids: pa.Array | pa.ChunkedArray, service: str) -> None:
    """Raise unless the feature store returned exactly rows 0..rows_in-1, once each."""
    ids = np.asarray(row_ids.to_numpy() if isinstance(row_ids, pa.Array) else row_ids.to_numpy())
    if len(ids) != rows_in or not np.array_equal(np.sort(ids), np.arange(rows_in)):
        raise TrainingSetAuditError(
            f"Feature service '{service}' returned {len(ids)} rows for {rows_in} interactions (row parity broken); "
            "use the DuckDB offline store (feature_store.yaml) and rebuild the training set."
        )


def count_future_rows(*, event_ts: pa.Array, snapshot_ts: pa.Array) -> int:
    """Rows whose feature row timestamp is not strictly before the event (null = no feature row = fine)."""
    event = pc.cast(event_ts, pa.int64())
    snapshot = pc.cast(pc.cast(snapshot_ts, pa.timestamp("us", tz="UTC")), pa.int64())
    return int(pc.sum(pc.greater_equal(snapshot, event).fill_null(False).cast(pa.int64())).as_py() or 0)


def count_target_leaks(
    *, user_ids: pa.Array, item_ids: pa.Array, event_ts: pa.Array, recent_items: pa.Array, first_seen: pa.Table
) -> int:
    """Rows whose recent items contain the target item although the user had no earlier interaction with it.

    first_seen: user_id, item_id, first_ts (the user's first interaction with the item, over all interactions).
    Genuine repeats (first_ts < event) are not leaks.
    """
    recent_items = recent_items.combine_chunks() if isinstance(recent_items, pa.ChunkedArray) else recent_items
    values = pc.list_flatten(recent_items)
    parents = pc.list_parent_indices(recent_items).to_numpy()  # (V,) row of each recent item
    targets = pa.array(item_ids).take(pa.array(parents))
    hit_rows = np.unique(parents[np.asarray(pc.equal(values, targets).fill_null(False))])  # (H,)
    if hit_rows.size == 0:
        return 0
    hits = pa.table(
        {
            "row": pa.array(hit_rows),
            "user_id": pa.array(user_ids).take(pa.array(hit_rows)),
            "item_id": pa.array(item_ids).take(pa.array(hit_rows)),
            "event_us": pc.cast(pa.array(event_ts).take(pa.array(hit_rows)), pa.int64()),
        }
    )
    seen = first_seen.select(["user_id", "item_id"]).append_column("first_us", pc.cast(first_seen.column("first_ts"), pa.int64()))
    joined = hits.join(seen, keys=["user_id", "item_id"], join_type="left outer")
    earlier = pc.less(joined.column("first_us"), joined.column("event_us")).fill_null(False)
    return int(joined.num_rows - pc.sum(earlier.cast(pa.int64())).as_py())


def first_interactions(interactions: pa.Table) -> pa.Table:
    """user_id, item_id, first_ts: each user's first interaction with each item."""
    grouped = interactions.group_by(["user_id", "item_id"]).aggregate([("event_timestamp", "min")])
    return grouped.rename_columns(["user_id", "item_id", "first_ts"])


def null_rates(table: pa.Table, columns: Sequence[str]) -> dict[str, float]:
    n = max(table.num_rows, 1)
    return {name: table.column(name).null_count / n for name in columns}


def fingerprint(table: pa.Table, *, feature_services: Sequence[str], time_window: tuple[str | None, str | None]) -> str:
    """sha256 of the table's content (column by column, independent of chunking), services and time window."""
    digest = hashlib.sha256()
    digest.update(repr((tuple(feature_services), tuple(time_window))).encode("utf-8"))
    for name in table.column_names:
        digest.update(b"\x1ecolumn\x1f" + name.encode("utf-8") + b"\x1f" + _type_text(table.schema.field(name).type).encode("utf-8"))
        _digest_array(digest, table.column(name).combine_chunks())
    return digest.hexdigest()


def raise_if_failed(report: AuditReport) -> AuditReport:
    if report.problems:
        raise TrainingSetAuditError(
            f"Training set audit failed: {'; '.join(report.problems)}; rebuild the sources with `towerctl data ingest` "
            "and do not write feature rows at or after their event."
        )
    return report


def _type_text(kind: pa.DataType) -> str:
    """The type as text without the name of a list's child field, which engines choose freely (item, element, l)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"list<{_type_text(kind.value_type)}>"
    return str(kind)


def _digest_array(digest: Any, array: pa.Array) -> None:
    valid = np.asarray(array.is_valid())  # (n,) bool
    digest.update(np.packbits(valid).tobytes())
    kind = array.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        digest.update(pc.fill_null(pc.list_value_length(array), 0).to_numpy().astype(np.int64).tobytes())
        _digest_array(digest, pc.list_flatten(array))
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = array.fill_null("").to_numpy(zero_copy_only=False)
        digest.update("\x1f".join(values.tolist()).encode("utf-8"))
    elif pa.types.is_timestamp(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        digest.update(pc.cast(array, pa.int64()).fill_null(0).to_numpy().tobytes())
    elif pa.types.is_floating(kind):
        digest.update(pc.cast(array, pa.float64()).fill_null(0.0).to_numpy().tobytes())
    else:
        digest.update(str(array.to_pylist()).encode("utf-8"))
