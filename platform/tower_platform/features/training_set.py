"""Point-in-time training sets: interactions joined with query and item features as of just before each event.

For an interaction at time t the entity row asks Feast for features as of t - 1 µs, so only feature rows stamped
strictly before t are used: a user-history snapshot that includes the interaction itself (stamped at t) never
reaches its own row, and two interactions of a user at the same timestamp do not see each other.

Columns (see towers.features.schema): row_id, user_id, item_id, event_timestamp, weight, the interaction values the dataset
config declares (``rating`` only when it declares one), split, then ``<view>__<feature>`` for the query service's
features and the item service's features.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from towers.features import FeatureSchema
from tower_platform.datasets import layout
from tower_platform.datasets.config import DatasetConfig, SplitConfig
from tower_platform.errors import ConfigError, InputError
from tower_platform.features.store import ROW_ID, FeastFeatureStore, is_snapshot_column
from tower_platform.features.training_audit import (
    AuditReport,
    TimeWindow,
    check_row_parity,
    count_future_rows,
    count_target_leaks,
    first_interactions,
    fingerprint,
    null_rates,
    raise_if_failed,
)

BASE_COLUMNS: tuple[str, ...] = ("row_id", "user_id", "item_id", "event_timestamp", "weight", "split")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
AS_OF_OFFSET = timedelta(microseconds=1)


@dataclass(frozen=True)
class SplitInfo:
    method: str
    validation_cutoff: datetime | None  # global_time: train ts < validation_cutoff <= validation ts < test_cutoff
    test_cutoff: datetime | None
    sizes: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "validation_cutoff": self.validation_cutoff.isoformat() if self.validation_cutoff else None,
            "test_cutoff": self.test_cutoff.isoformat() if self.test_cutoff else None,
            "sizes": dict(self.sizes),
        }


@dataclass(frozen=True)
class TrainingSet:
    table: pa.Table
    schema: FeatureSchema
    audit: AuditReport
    split: SplitInfo
    feature_services: tuple[str, ...]
    time_window: TimeWindow | None

    @property
    def fingerprint(self) -> str:
        return self.audit.fingerprint


def build_training_set(
    store: FeastFeatureStore, config: DatasetConfig, *, time_window: TimeWindow | None = None
) -> TrainingSet:
    """Join every interaction (within ``time_window`` = [start, end), either end open) with point-in-time features.

    Raises TrainingSetAuditError when the result breaks row parity, uses a feature row that is not strictly older
    than its event, or leaks the target item into the user's recent items.
    """
    ingested = store.source_schema().get("dataset")
    if ingested != config.name:
        raise ConfigError(
            f"Dataset config {config.path} is for '{config.name}' but {store.home_dir} holds '{ingested}'; "
            "ingest it first with `towerctl data ingest --config` and the same file."
        )
    interactions = store.read_source(layout.INTERACTIONS)
    all_interactions = interactions
    interactions = _within(interactions, time_window)
    n = interactions.num_rows
    if n == 0:
        raise InputError(f"No interactions under {store.home_dir} fall in the time window {_window_text(time_window)}; widen it.")
    interactions = interactions.add_column(0, ROW_ID, pa.array(np.arange(n, dtype=np.int64)))
    event_ts = interactions.column("event_timestamp").combine_chunks()
    as_of = pa.array(pc.cast(event_ts, pa.int64()).to_numpy() - 1, pa.int64()).cast(event_ts.type)  # (n,) t - 1 µs

    services = store.services
    joined: dict[str, pa.Table] = {}
    for service, key in zip(services, (layout.USER_KEY, layout.ITEM_KEY)):
        entity = pa.table({ROW_ID: interactions.column(ROW_ID), key: interactions.column(key), layout.TIMESTAMP_FIELD: as_of})
        joined[service] = store.historical_features(entity, service)
        check_row_parity(rows_in=n, row_ids=joined[service].column(ROW_ID), service=service)

    split_column, split_info = assign_split(interactions, config.split)
    values = [c for c in interactions.column_names if c not in BASE_COLUMNS]  # declared interaction values (rating, ...)
    table = interactions.select([*BASE_COLUMNS[:-1], *values]).append_column("split", split_column)
    snapshots: dict[str, pa.Array] = {}
    for service in services:
        for name in joined[service].column_names:
            if "__" not in name:
                continue
            column = joined[service].column(name).combine_chunks()
            if is_snapshot_column(name):
                snapshots[name.split("__")[0]] = column
            else:
                table = table.append_column(name, column)

    report = audit_training_set(
        table,
        snapshots=snapshots,
        rows_in=n,
        first_seen=first_interactions(all_interactions),
        feature_services=services,
        recent_items=store.source_schema().get("recent_items"),
        time_window=time_window,
    )
    return TrainingSet(
        table=table,
        schema=store.feature_schema(),
        audit=report,
        split=split_info,
        feature_services=services,
        time_window=time_window,
    )


def audit_training_set(
    table: pa.Table,
    *,
    snapshots: dict[str, pa.Array],
    rows_in: int,
    first_seen: pa.Table,
    feature_services: tuple[str, ...],
    time_window: TimeWindow | None,
    recent_items: str | None = None,
) -> AuditReport:
    """Audit a joined training table; raises TrainingSetAuditError on any problem, else returns the report.

    snapshots: feature view -> the timestamp of the feature row each training row used (null = none).
    recent_items: the query feature listing the user's recent items (checked for a leaked target), if any.
    """
    problems: list[str] = []
    if table.num_rows != rows_in:
        problems.append(f"{table.num_rows} rows out for {rows_in} interactions in")
    event_ts = table.column("event_timestamp").combine_chunks()
    future = {view: count_future_rows(event_ts=event_ts, snapshot_ts=ts) for view, ts in snapshots.items()}
    problems += [f"{count} rows use a '{view}' feature row not older than their event" for view, count in future.items() if count]
    recent = recent_items
    leaked = 0
    if recent is not None and recent in table.column_names:
        leaked = count_target_leaks(
            user_ids=table.column("user_id").combine_chunks(),
            item_ids=table.column("item_id").combine_chunks(),
            event_ts=event_ts,
            recent_items=table.column(recent),
            first_seen=first_seen,
        )
        if leaked:
            problems.append(f"{leaked} rows hold their target item in '{recent}' without an earlier interaction")
    window = _window_strings(time_window)
    sizes = {name: int(pc.sum(pc.equal(table.column("split"), name).cast(pa.int64())).as_py() or 0) for name in SPLITS} if "split" in table.column_names else {}
    report = AuditReport(
        rows_in=rows_in,
        rows_out=table.num_rows,
        null_rates=null_rates(table, [c for c in table.column_names if "__" in c]),
        future_rows=future,
        leaked_rows=leaked,
        split_sizes=sizes,
        fingerprint=fingerprint(table, feature_services=feature_services, time_window=window),
        feature_services=tuple(feature_services),
        time_window=window,
        problems=tuple(problems),
    )
    return raise_if_failed(report)


def assign_split(interactions: pa.Table, config: SplitConfig) -> tuple[pa.Array, SplitInfo]:
    """train / validation / test per row.

    global_time (docs/evaluation.md): ts sorted, cutoff_val = ts[floor(q_val N)], cutoff_test = ts[floor(q_test N)];
    train ts < cutoff_val <= validation < cutoff_test <= test.
    leave_last_out: per user with >= 3 interactions, the last one (by time, then row) is test and the one before
    validation; everything else (and users with fewer interactions) is train.
    """
    ts = pc.cast(interactions.column("event_timestamp").combine_chunks(), pa.int64()).to_numpy()  # (n,) µs
    n = len(ts)
    labels = np.zeros(n, dtype=np.int8)  # 0 train, 1 validation, 2 test
    cut_val = cut_test = None
    if config.method == "global_time":
        ts_sorted = np.sort(ts)
        cut_val = int(ts_sorted[min(int(np.floor(config.validation_quantile * n)), n - 1)])
        cut_test = int(ts_sorted[min(int(np.floor(config.test_quantile * n)), n - 1)])
        labels[ts >= cut_val] = 1
        labels[ts >= cut_test] = 2
    else:
        _, users = np.unique(interactions.column("user_id").to_numpy(zero_copy_only=False).astype(str), return_inverse=True)
        order = np.lexsort((np.arange(n), ts, users))  # by user, time, row
        u = users[order]
        last_of_user = np.r_[u[1:] != u[:-1], True]
        user_end = np.minimum.accumulate(np.where(last_of_user, np.arange(n), n)[::-1])[::-1]  # (n,) last row of user
        from_end = user_end - np.arange(n)  # (n,) 0 = the user's last interaction
        counts = np.bincount(u)[u]  # (n,) interactions of the row's user
        sorted_labels = np.where((counts >= 3) & (from_end == 0), 2, np.where((counts >= 3) & (from_end == 1), 1, 0))
        labels[order] = sorted_labels
    names = np.asarray(SPLITS, dtype=object)[labels]
    sizes = {name: int((labels == i).sum()) for i, name in enumerate(SPLITS)}
    as_time = lambda us: None if us is None else pa.scalar(us, pa.int64()).cast(pa.timestamp("us", tz="UTC")).as_py()  # noqa: E731
    return pa.array(names, pa.string()), SplitInfo(
        method=config.method, validation_cutoff=as_time(cut_val), test_cutoff=as_time(cut_test), sizes=sizes
    )


def write_training_set(training_set: TrainingSet, path: Path) -> Path:
    """Write the table as parquet (schema, audit and split in the file's metadata), via a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        b"tower.feature_schema": training_set.schema.to_json().encode("utf-8"),
        b"tower.audit": json.dumps(training_set.audit.to_dict()).encode("utf-8"),
        b"tower.split": json.dumps(training_set.split.to_dict()).encode("utf-8"),
    }
    table = training_set.table.replace_schema_metadata({**(training_set.table.schema.metadata or {}), **metadata})
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _within(interactions: pa.Table, window: TimeWindow | None) -> pa.Table:
    if window is None:
        return interactions
    start, end = window
    ts = interactions.column("event_timestamp")
    mask = pa.array(np.ones(interactions.num_rows, dtype=bool))
    if start is not None:
        mask = pc.and_(mask, pc.greater_equal(ts, pa.scalar(start, ts.type)))
    if end is not None:
        mask = pc.and_(mask, pc.less(ts, pa.scalar(end, ts.type)))
    return interactions.filter(mask)


def _window_strings(window: TimeWindow | None) -> tuple[str | None, str | None]:
    if window is None:
        return (None, None)
    return tuple(None if w is None else w.isoformat() for w in window)  # type: ignore[return-value]


def _window_text(window: TimeWindow | None) -> str:
    start, end = _window_strings(window)
    return f"[{start or '-inf'}, {end or '+inf'})"
