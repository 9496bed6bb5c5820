"""Derived point-in-time features declared by name in the dataset config, vectorised over all interactions.

Query side (view ``user_history``): one snapshot per (user, distinct event timestamp), stamped at that timestamp and
computed from the user's interactions with timestamp <= it. A training row asks for features as of (event - 1 µs),
so it sees the snapshot of the user's previous timestamp: never its own interaction, nor one at the same timestamp.
Windowed counts are taken over (snapshot time - window, snapshot time].

Item side (view ``item_stats``): one static row per item (counts 0) stamped before the first event, then one row per
day boundary at which a declared value changes: the day after a day with interactions, and (for a count over W days)
W days after it, when those interactions leave the window. Each row counts the interactions strictly before it.

Elapsed-time features (days_since_first, time_since_previous) are stored as the epoch seconds of their reference
interaction; the feature store's reads turn them into the elapsed time as of each entity row (see ``elapsed`` in
schema.json). Memory grows with the data: sorted arrays and sparse (snapshot, value) pairs, never a rows x values
matrix.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.datasets.config import ItemFeature, QueryFeature
from tower_platform.datasets.tabular import TIMESTAMP_TYPE, lists_from_parents

MICROS_PER_DAY = 86_400 * 1_000_000
MICROS_PER_SECOND = 1_000_000
PAIR_BUDGET = 4_000_000  # (snapshot, value) pairs per block of users in top_values
SNAPSHOT_BLOCK = 200_000  # snapshots per block in recent_items


def build_user_history(interactions: pa.Table, items: pa.Table, features: Mapping[str, QueryFeature]) -> pa.Table:
    """user_id, event_timestamp, snapshot_ts and one column per declared query feature.

    interactions: user_id, item_id, event_timestamp and numeric value columns. items: item_id and attribute columns.
    """
    user_codes, users = codes_of(interactions.column("user_id"))  # (n,)
    item_codes, item_ids = codes_of(interactions.column("item_id"))  # (n,)
    ts = interactions.column("event_timestamp").cast(pa.int64()).to_numpy()  # (n,) µs
    n = len(ts)
    order = np.lexsort((np.arange(n), ts, user_codes))  # by user, then time, then input order
    u, t, it = user_codes[order], ts[order], item_codes[order]
    new_user = np.r_[True, u[1:] != u[:-1]]  # (n,)
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))  # (n,) first row of the row's user
    snap = np.flatnonzero(np.r_[(u[1:] != u[:-1]) | (t[1:] != t[:-1]), True])  # (S,) last row of each (user, ts)
    start = user_start[snap]  # (S,)

    stamp = pa.array(t[snap], pa.int64()).cast(TIMESTAMP_TYPE)
    columns: dict[str, pa.Array] = {"user_id": users.take(pa.array(u[snap])), "event_timestamp": stamp, "snapshot_ts": stamp}
    for name, feature in features.items():
        if feature.type == "recent_items":
            rows, parents = recent_distinct_items(u, it, user_start, snap, n_items=int(feature.length or 1))
            columns[name] = lists_from_parents(item_ids.take(pa.array(it[rows])), parents, length=len(snap))
        elif feature.type == "top_values":
            values, value_codes = item_value_lists(items, item_ids, str(feature.attribute))
            columns[name] = top_values(u, it, snap, values=values, value_codes=value_codes, k=int(feature.k or 1))
        elif feature.type == "count":
            first = start if feature.window_days is None else first_row_after(u, t, snap, window=_window_us(feature.window_days))
            columns[name] = pa.array(snap - first + 1, pa.int64())
        elif feature.type == "mean":
            values = interactions.column(str(feature.column)).cast(pa.float64()).to_numpy(zero_copy_only=False)[order]
            columns[name] = pa.array(_running_mean(values, user_start, snap), pa.float64(), from_pandas=True)
        elif feature.type == "days_since_first":
            columns[name] = pa.array(t[start] / MICROS_PER_SECOND, pa.float64())
        elif feature.type == "time_since_previous":
            columns[name] = pa.array(t[snap] / MICROS_PER_SECOND, pa.float64())
    return pa.table(columns)


def build_item_stats(interactions: pa.Table, item_ids: pa.Array, features: Mapping[str, ItemFeature], *, stamp: int) -> pa.Table:
    """item_id, event_timestamp, snapshot_ts and one column per declared item feature (see the module doc)."""
    item_codes = pc.index_in(interactions.column("item_id"), value_set=item_ids).to_numpy().astype(np.int64)  # (n,)
    day = interactions.column("event_timestamp").cast(pa.int64()).to_numpy() // MICROS_PER_DAY  # (n,)
    day0 = int(day.min()) - 1
    windows = sorted({int(f.window_days) for f in features.values() if f.type == "count" and f.window_days})
    span = int(day.max()) - day0 + 2 + (windows[-1] if windows else 0)  # days per item in the packed key
    key = item_codes * span + (day - day0)  # (n,) packed (item, day)
    pair_keys, inverse = np.unique(key, return_inverse=True)  # (P,) sorted (item, day)
    inverse = inverse.reshape(-1)
    cum_count = np.r_[0, np.cumsum(np.bincount(inverse, minlength=len(pair_keys)))]  # (P + 1,)

    # the boundaries where a value changes: the day after an active day, and W days after it for a W-day count
    boundaries = np.unique(np.concatenate([pair_keys + 1, *(pair_keys + 1 + w for w in windows)]))  # (B,) packed
    b_item = boundaries // span
    item_start = np.searchsorted(pair_keys, b_item * span, side="left")  # (B,) first pair of the item

    def before(bounds: np.ndarray) -> np.ndarray:  # interactions of the boundary's item on days < bound
        return cum_count[np.searchsorted(pair_keys, bounds, side="left")] - cum_count[item_start]

    n_items, n_rows = len(item_ids), len(boundaries)
    columns: dict[str, np.ndarray] = {}
    for name, feature in features.items():
        if feature.type == "count":
            low = boundaries - feature.window_days if feature.window_days else b_item * span
            counts = before(boundaries) - (before(np.maximum(low, b_item * span)) if feature.window_days else 0)
            columns[name] = np.concatenate([np.zeros(n_items, np.int64), counts])
        elif feature.type == "mean":
            values = interactions.column(str(feature.column)).cast(pa.float64()).to_numpy(zero_copy_only=False)
            present = ~np.isnan(values)
            cum_sum = np.r_[0.0, np.cumsum(np.bincount(inverse, weights=np.where(present, values, 0.0), minlength=len(pair_keys)))]
            cum_n = np.r_[0.0, np.cumsum(np.bincount(inverse, weights=present, minlength=len(pair_keys)))]
            at = np.searchsorted(pair_keys, boundaries, side="left")
            total, count = cum_sum[at] - cum_sum[item_start], cum_n[at] - cum_n[item_start]
            with np.errstate(invalid="ignore", divide="ignore"):
                columns[name] = np.concatenate([np.full(n_items, np.nan), np.where(count > 0, total / np.maximum(count, 1), np.nan)])
        elif feature.type == "days_since_first":
            ts = interactions.column("event_timestamp").cast(pa.int64()).to_numpy()
            first = np.full(n_items, np.iinfo(np.int64).max)
            np.minimum.at(first, item_codes, ts)
            columns[name] = np.concatenate([np.full(n_items, np.nan), first[b_item] / MICROS_PER_SECOND])
    stamps = np.concatenate([np.full(n_items, stamp, np.int64), (boundaries % span + day0) * MICROS_PER_DAY])
    stamp_array = pa.array(stamps, pa.int64()).cast(TIMESTAMP_TYPE)
    table = {
        "item_id": pa.concat_arrays([item_ids, item_ids.take(pa.array(b_item))]),
        "event_timestamp": stamp_array,
        "snapshot_ts": stamp_array,
    }
    for name, values in columns.items():
        table[name] = pa.array(values, pa.float64() if values.dtype.kind == "f" else pa.int64(), from_pandas=True)
    assert all(len(v) == n_items + n_rows for v in table.values())
    return pa.table(table)


def recent_distinct_items(
    u: np.ndarray, it: np.ndarray, user_start: np.ndarray, snap: np.ndarray, *, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each snapshot row j: the rows of the last ``n_items`` distinct items among the user's rows <= j.

    Returns (rows, parents): the sorted-order row of each list value and its snapshot index, most recent first.
    A row p <= j is current at j when the same item does not occur again in (p, j]. Look back over a window of W rows,
    keep current rows, and double W only for the snapshots that did not find enough (repeats are rare).
    """
    n = len(u)
    pos = np.arange(n)
    by_pair = np.lexsort((pos, it, u))  # (n,) rows grouped by (user, item), in time order
    same_pair = (u[by_pair][1:] == u[by_pair][:-1]) & (it[by_pair][1:] == it[by_pair][:-1])
    next_same = np.full(n, n, dtype=np.int64)  # (n,) next row with the same (user, item); n = none
    next_same[by_pair[:-1][same_pair]] = by_pair[1:][same_pair]
    first_seen = np.ones(n, dtype=np.int64)
    first_seen[by_pair[1:][same_pair]] = 0
    distinct_so_far = segment_cumsum(first_seen, user_start)  # (n,)
    need = np.minimum(distinct_so_far[snap], n_items)  # (S,)
    max_len = int((snap - user_start[snap]).max(initial=0)) + 1
    found_rows: list[np.ndarray] = []
    found_parents: list[np.ndarray] = []
    for block in range(0, len(snap), SNAPSHOT_BLOCK):
        pending = np.arange(block, min(block + SNAPSHOT_BLOCK, len(snap)))
        width = n_items
        while pending.size:
            j = snap[pending]  # (P,)
            idx = j[:, None] - np.arange(width)[None, :]  # (P, W) rows j, j-1, ..., j-W+1
            inside = idx >= user_start[j][:, None]  # (P, W)
            safe = np.where(inside, idx, 0)
            current = inside & (next_same[safe] > j[:, None])  # (P, W)
            take = current & (np.cumsum(current, axis=1) <= n_items)  # (P, W)
            done = (take.sum(axis=1) >= need[pending]) | (width >= max_len)
            rows_done, cols_done = np.nonzero(take[done])
            found_parents.append(pending[done][rows_done])
            found_rows.append(safe[done][rows_done, cols_done])
            pending = pending[~done]
            width *= 2
    parents = np.concatenate(found_parents) if found_parents else np.empty(0, np.int64)
    rows = np.concatenate(found_rows) if found_rows else np.empty(0, np.int64)
    order = np.argsort(parents, kind="stable")  # keeps each snapshot's values most recent first
    return rows[order], parents[order]


def item_value_lists(items: pa.Table, item_ids: pa.Array, attribute: str) -> tuple[tuple[np.ndarray, np.ndarray], pa.Array]:
    """CSR of each interaction item's distinct attribute values: (offsets (I + 1,), value codes), and the sorted values."""
    column = items.column(attribute).combine_chunks()
    if not pa.types.is_list(column.type):
        column = lists_from_parents(column.drop_null(), np.flatnonzero(np.asarray(column.is_valid())), length=len(column))
    flat = pc.list_flatten(column)
    codes, values = codes_of(flat)  # sorted: ties go by value
    item_row = pc.index_in(item_ids, value_set=items.column("item_id").combine_chunks()).to_numpy(zero_copy_only=False)
    item_row = np.where(np.isnan(item_row.astype(np.float64)), -1, item_row).astype(np.int64)  # (I,) -1 = not listed
    parent = pc.list_parent_indices(column).to_numpy()  # (V,) items row of each value
    to_item = np.full(items.num_rows, -1, np.int64)
    to_item[item_row[item_row >= 0]] = np.flatnonzero(item_row >= 0)
    owner = to_item[parent]
    keep = owner >= 0
    pairs = np.unique(owner[keep] * (len(values) + 1) + codes[keep])  # distinct (item, value), sorted by item
    pair_item, pair_value = pairs // (len(values) + 1), pairs % (len(values) + 1)
    offsets = np.r_[0, np.cumsum(np.bincount(pair_item, minlength=len(item_ids)))]
    return (offsets, pair_value), values


def top_values(u: np.ndarray, it: np.ndarray, snap: np.ndarray, *, values: tuple[np.ndarray, np.ndarray], value_codes: pa.Array, k: int) -> pa.ListArray:
    """The k most frequent values among the user's interactions so far (count desc, then value), zero counts left out.

    Sparse: only (snapshot, value) pairs the user has met are formed, a block of users at a time.
    """
    offsets, item_values = values
    n = len(u)
    lengths = offsets[it + 1] - offsets[it]  # (n,) values of each row's item
    entry_row = np.repeat(np.arange(n), lengths)  # (E,)
    entry_value = item_values[np.repeat(offsets[it], lengths) + (np.arange(len(entry_row)) - np.repeat(np.cumsum(lengths) - lengths, lengths))]
    n_values = max(len(value_codes), 1)
    pair_of_entry = u[entry_row].astype(np.int64) * n_values + entry_value  # (E,) packed (user, value)
    by_pair = np.lexsort((entry_row, pair_of_entry))
    pair_sorted, rows_sorted = pair_of_entry[by_pair], entry_row[by_pair]
    first_of_pair = np.r_[True, pair_sorted[1:] != pair_sorted[:-1]]
    pair_start = np.flatnonzero(first_of_pair)  # (Q,) first entry of each (user, value)
    pair_key = pair_sorted[pair_start]
    pair_first_row = rows_sorted[pair_start]
    pair_user = pair_key // n_values
    snap_user = u[snap]
    lo = np.searchsorted(snap, pair_first_row, side="left")  # (Q,) first snapshot that sees the pair
    hi = np.searchsorted(snap_user, pair_user, side="right")  # (Q,) one past the user's last snapshot
    span = hi - lo
    entry_key = pair_sorted * (n + 1) + rows_sorted  # sorted: (pair, row)
    out_snap: list[np.ndarray] = []
    out_value: list[np.ndarray] = []
    # blocks of whole users (pairs are sorted by user) holding about PAIR_BUDGET (snapshot, value) pairs
    user_end = np.r_[np.flatnonzero(pair_user[1:] != pair_user[:-1]) + 1, len(pair_user)]
    cum = np.r_[0, np.cumsum(span)]
    begin = 0
    while begin < len(pair_user):
        limit = max(int(np.searchsorted(cum, cum[begin] + PAIR_BUDGET, side="right")) - 1, begin + 1)
        end = int(user_end[np.searchsorted(user_end, limit, side="left")])  # extended to the end of a user
        q = np.arange(begin, end)
        reps = span[q]
        s = np.repeat(lo[q], reps) + (np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps))  # (G,) snapshot
        p = np.repeat(q, reps)  # (G,) pair
        count = np.searchsorted(entry_key, pair_key[p] * (n + 1) + snap[s], side="right") - pair_start[p]  # (G,)
        value = pair_key[p] % n_values
        order = np.lexsort((value, -count, s))
        s, value = s[order], value[order]
        group_start = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]
        rank = np.arange(len(s)) - np.repeat(group_start, np.diff(np.r_[group_start, len(s)]))
        keep = rank < k
        out_snap.append(s[keep])
        out_value.append(value[keep])
        begin = end
    parents = np.concatenate(out_snap) if out_snap else np.empty(0, np.int64)
    chosen = np.concatenate(out_value) if out_value else np.empty(0, np.int64)
    return lists_from_parents(value_codes.take(pa.array(chosen, pa.int64())), parents, length=len(snap))


def first_row_after(u: np.ndarray, t: np.ndarray, snap: np.ndarray, *, window: int) -> np.ndarray:
    """For each snapshot row j: the first row of j's user with t > t[j] - window (rows sorted by user, time)."""
    bounds = t[snap] - window  # (S,)
    values, inverse = np.unique(np.concatenate([t, bounds]), return_inverse=True)
    rank = inverse[: len(t)]  # dense time ranks, so that (user, rank) packs into one int64 key
    bound_rank = inverse[len(t) :]
    key = u.astype(np.int64) * (len(values) + 1) + rank  # (n,) non-decreasing
    bound_key = u[snap].astype(np.int64) * (len(values) + 1) + bound_rank
    return np.searchsorted(key, bound_key, side="right")


def segment_cumsum(values: np.ndarray, user_start: np.ndarray) -> np.ndarray:
    """Cumulative sum that restarts at each user's first row (rows sorted by user)."""
    total = np.cumsum(values, axis=0)
    before = np.concatenate([np.zeros_like(total[:1]), total[:-1]], axis=0)
    return total - before[user_start]


def codes_of(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Integer codes of a string column and the sorted distinct values they index (Arrow, no Python objects)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(array.cast(pa.string()))
    dictionary = encoded.dictionary
    order = pc.sort_indices(dictionary).to_numpy()  # (D,)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    return rank[indices.astype(np.int64)] if len(indices) else np.empty(0, np.int64), dictionary.take(pa.array(order))


def _running_mean(values: np.ndarray, user_start: np.ndarray, snap: np.ndarray) -> np.ndarray:
    present = ~np.isnan(values)
    total = segment_cumsum(np.where(present, values, 0.0), user_start)[snap]
    count = segment_cumsum(present.astype(np.int64), user_start)[snap]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _window_us(days: float) -> int:
    return int(round(days * MICROS_PER_DAY))
