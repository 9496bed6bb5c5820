"""Canonical tables of a dataset -> the Feast source tables (generic: nothing here knows a particular dataset).

    interactions   user_id, item_id, event_timestamp, rating, weight; sorted by (event_timestamp, user_id, item_id)
    item_profile   item_id, event_timestamp, snapshot_ts, title, genres, category (first genre), release_year
    user_profile   user_id, event_timestamp, snapshot_ts, demographic columns (only when the dataset has users)
    item_stats     item_id, event_timestamp, snapshot_ts, interaction_count, mean_rating: one row per item at the
                   profile stamp (count 0), then one per day boundary after a day with interactions, computed from
                   the interactions strictly before that boundary

Static rows (profiles, the first item_stats rows) are stamped at :func:`profile_stamp`: the UTC midnight one day
before the first event, so every event sees them.

Weights: ``constant`` gives every interaction 1.0 (each rating is an implicit positive); ``rating`` gives
rating / the scale's highest rating (unrated interactions 1.0).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.datasets.base import TIMESTAMP_TYPE, RawDataset
from tower_platform.datasets.user_history import MICROS_PER_DAY, segment_cumsum
from tower_platform.errors import InputError

USER_PROFILE_TYPES: dict[pa.DataType, str] = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64"}


def check_interactions(raw: RawDataset) -> None:
    """Refuse duplicate interactions (same user, item and timestamp) with a message naming file and columns."""
    table = raw.interactions
    if table.num_rows == 0:
        raise InputError(f"File {raw.interactions_file} has no interactions; it needs at least one row.")
    keys = ["user_id", "item_id", "event_timestamp"]
    for key in keys:
        if table.column(key).null_count:
            raise InputError(
                f"File {raw.interactions_file}: column '{_source_name(raw, key)}' has empty values; every row needs one."
            )
    counts = table.group_by(keys).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts.column("count_all"), 1))
    if repeated.num_rows:
        first = repeated.slice(0, 1).to_pylist()[0]
        names = ", ".join(_source_name(raw, k) for k in keys)
        raise InputError(
            f"File {raw.interactions_file} has {repeated.num_rows} duplicate interactions (same {names}), e.g. "
            f"user {first['user_id']} and item {first['item_id']} at {first['event_timestamp'].isoformat()}; "
            "remove the repeated rows."
        )


def profile_stamp(interactions: pa.Table) -> int:
    """Timestamp (µs) of static rows: UTC midnight one day before the first event."""
    first = int(pc.min(interactions.column("event_timestamp")).cast(pa.int64()).as_py())
    return (first // MICROS_PER_DAY - 1) * MICROS_PER_DAY


def build_interactions(raw: RawDataset, *, weight: str, max_rating: float) -> pa.Table:
    table = raw.interactions.select(["user_id", "item_id", "event_timestamp", "rating"])
    table = table.set_column(2, "event_timestamp", table.column("event_timestamp").cast(TIMESTAMP_TYPE))
    table = table.set_column(3, "rating", table.column("rating").cast(pa.float64()))
    if weight == "rating":
        weights = pc.fill_null(pc.divide(table.column("rating"), float(max_rating)), 1.0)
    else:
        weights = pa.array(np.ones(table.num_rows), pa.float64())
    table = table.append_column("weight", weights)
    return table.take(pc.sort_indices(table, [("event_timestamp", "ascending"), ("user_id", "ascending"), ("item_id", "ascending")]))


def build_item_profile(raw: RawDataset, interactions: pa.Table, *, stamp: int) -> pa.Table:
    """Every item of the items file, plus items that only appear in interactions (with empty attributes)."""
    items = raw.items
    known = items.column("item_id").combine_chunks()
    duplicated = items.group_by(["item_id"]).aggregate([([], "count_all")])
    duplicated = duplicated.filter(pc.greater(duplicated.column("count_all"), 1))
    if duplicated.num_rows:
        raise InputError(
            f"The items file of {raw.interactions_file.parent} lists item {duplicated.column('item_id')[0].as_py()} "
            "more than once; keep one row per item."
        )
    seen = pc.unique(interactions.column("item_id").combine_chunks())
    unlisted = pc.filter(seen, pc.invert(pc.is_in(seen, value_set=known)))
    genres = items.column("genres").combine_chunks().cast(pa.list_(pa.string()))
    table = pa.table(
        {
            "item_id": pa.concat_arrays([known, unlisted]),
            "title": pa.concat_arrays([items.column("title").combine_chunks().cast(pa.string()), pa.nulls(len(unlisted), pa.string())]),
            "genres": pa.concat_arrays([genres, pa.array([[]] * len(unlisted), pa.list_(pa.string()))]),
            "release_year": pa.concat_arrays(
                [items.column("release_year").combine_chunks().cast(pa.int64()), pa.nulls(len(unlisted), pa.int64())]
            ),
        }
    )
    table = table.append_column("category", first_values(table.column("genres").combine_chunks()))
    table = _stamped(table, stamp=stamp)
    return table.select(["item_id", "event_timestamp", "snapshot_ts", "title", "genres", "category", "release_year"])


def build_user_profile(raw: RawDataset, *, stamp: int) -> tuple[pa.Table, dict[str, str]] | None:
    """The users table stamped as static rows, and its feature columns with their source type names."""
    if raw.users is None:
        return None
    users = raw.users
    columns: dict[str, str] = {}
    for name in users.column_names:
        if name == "user_id":
            continue
        kind = USER_PROFILE_TYPES.get(users.schema.field(name).type)
        if kind is None:
            raise InputError(
                f"The users file of {raw.interactions_file.parent}: column '{name}' has type "
                f"{users.schema.field(name).type}; user columns must be strings, integers or numbers."
            )
        columns[name] = kind
    table = _stamped(users, stamp=stamp)
    return table.select(["user_id", "event_timestamp", "snapshot_ts", *columns]), columns


def build_item_stats(interactions: pa.Table, item_ids: pa.Array, *, stamp: int) -> pa.Table:
    """Per item: count 0 at the profile stamp, then cumulative stats at each day boundary after an active day."""
    item_codes = pc.index_in(interactions.column("item_id"), value_set=item_ids).to_numpy().astype(np.int64)  # (n,)
    day = interactions.column("event_timestamp").cast(pa.int64()).to_numpy() // MICROS_PER_DAY  # (n,)
    rating = interactions.column("rating").to_numpy(zero_copy_only=False).astype(np.float64)  # (n,)
    rated = ~np.isnan(rating)
    # one group per (item, day), in (item, day) order
    pair, first_index, inverse = np.unique(np.stack([item_codes, day], axis=1), axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    count = np.bincount(inverse, minlength=len(pair))  # (P,)
    rated_count = np.bincount(inverse, weights=rated, minlength=len(pair))
    rating_sum = np.bincount(inverse, weights=np.where(rated, rating, 0.0), minlength=len(pair))
    new_item = np.r_[True, pair[1:, 0] != pair[:-1, 0]]
    group_start = np.maximum.accumulate(np.where(new_item, np.arange(len(pair)), 0))
    cum_count = segment_cumsum(count, group_start)
    cum_rated = segment_cumsum(rated_count, group_start)
    cum_sum = segment_cumsum(rating_sum, group_start)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cum_rated > 0, cum_sum / np.maximum(cum_rated, 1), np.nan)
    n_items = len(item_ids)
    stamps = np.concatenate([np.full(n_items, stamp, np.int64), (pair[:, 1] + 1) * MICROS_PER_DAY])
    table = pa.table(
        {
            "item_id": pa.concat_arrays([item_ids, item_ids.take(pa.array(pair[:, 0]))]),
            "event_timestamp": pa.array(stamps, pa.int64()).cast(TIMESTAMP_TYPE),
            "interaction_count": pa.array(np.concatenate([np.zeros(n_items, np.int64), cum_count]), pa.int64()),
            "mean_rating": pa.array(np.concatenate([np.full(n_items, np.nan), mean]), pa.float64(), from_pandas=True),
        }
    )
    table = table.append_column("snapshot_ts", table.column("event_timestamp"))
    return table.select(["item_id", "event_timestamp", "snapshot_ts", "interaction_count", "mean_rating"])


def first_values(lists: pa.ListArray) -> pa.Array:
    """The first value of each list; null for empty or null lists."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()  # (n,)
    starts = lists.offsets.to_numpy()[:-1]  # (n,) index into lists.values
    index = pa.array(np.where(lengths > 0, starts, 0), pa.int64(), mask=lengths == 0)
    return lists.values.take(index)


def _stamped(table: pa.Table, *, stamp: int) -> pa.Table:
    stamps = pa.array(np.full(table.num_rows, stamp, np.int64), pa.int64()).cast(TIMESTAMP_TYPE)
    return table.append_column("event_timestamp", stamps).append_column("snapshot_ts", stamps)


def _source_name(raw: RawDataset, column: str) -> str:
    return raw.source_columns.get(column, column)


def fingerprint_files(files: tuple[Path, ...]) -> str:
    """sha256 over the raw files' names and bytes, in the order given."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode("utf-8") + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
