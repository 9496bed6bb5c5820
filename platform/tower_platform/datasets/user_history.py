"""Point-in-time user-history snapshots, vectorised over all interactions at once.

One snapshot per (user, distinct event timestamp), stamped at that timestamp and computed from the user's
interactions with timestamp <= it. A training row queries features as of (event - 1 µs), so it sees the snapshot
of the user's previous timestamp: only interactions strictly before its own, and never one at the same timestamp.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.datasets.base import TIMESTAMP_TYPE, lists_from_parents

MICROS_PER_DAY = 86_400 * 1_000_000
WINDOW_30D_US = 30 * MICROS_PER_DAY


def build_user_history(
    interactions: pa.Table,
    item_profile: pa.Table,
    *,
    recent_items: int,
    top_genres: int,
) -> pa.Table:
    """Snapshots with user_id, event_timestamp, snapshot_ts and the user_history features.

    interactions: user_id, item_id, event_timestamp, rating. item_profile: item_id, genres (list<string>).
    recent_items: the last N distinct items, most recent first (ties at one timestamp: later rows first).
    top_genres: the N genres the user met most often so far, ties broken by genre name.
    """
    user_codes, users = _codes(interactions.column("user_id"))  # (n,)
    item_codes, items = _codes(interactions.column("item_id"))  # (n,)
    ts = interactions.column("event_timestamp").cast(pa.int64()).to_numpy()  # (n,) µs
    rating = interactions.column("rating").cast(pa.float64()).to_numpy(zero_copy_only=False)  # (n,) NaN = none
    n = len(ts)

    order = np.lexsort((np.arange(n), ts, user_codes))  # by user, then time, then input order
    u, t, it, r = user_codes[order], ts[order], item_codes[order], rating[order]
    new_user = np.r_[True, u[1:] != u[:-1]]  # (n,)
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))  # (n,) first row of the row's user
    last_of_ts = np.r_[(u[1:] != u[:-1]) | (t[1:] != t[:-1]), True]
    snap = np.flatnonzero(last_of_ts)  # (S,) the last row of each (user, timestamp) group
    start = user_start[snap]  # (S,)

    n_interactions = snap - start + 1  # (S,)
    rated = ~np.isnan(r)
    rating_sum = segment_cumsum(np.where(rated, r, 0.0), user_start)[snap]
    rating_count = segment_cumsum(rated.astype(np.int64), user_start)[snap]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_rating = np.where(rating_count > 0, rating_sum / np.maximum(rating_count, 1), np.nan)
    days_since_first = (t[snap] - t[start]) / MICROS_PER_DAY
    n_30d = snap - _first_row_after(u, t, snap, window=WINDOW_30D_US) + 1

    recent = _recent_distinct_items(u, it, user_start, snap, n_items=recent_items)
    recent_values = pa.array(np.asarray(items, dtype=object)[it[recent.flat_rows]], pa.string())
    genres = _top_genres(it, user_start, snap, items=items, item_profile=item_profile, k=top_genres)

    stamp = pa.array(t[snap], pa.int64()).cast(TIMESTAMP_TYPE)
    return pa.table(
        {
            "user_id": pa.array(np.asarray(users, dtype=object)[u[snap]], pa.string()),
            "event_timestamp": stamp,
            "snapshot_ts": stamp,
            "recent_items": lists_from_parents(recent_values, recent.parents, length=len(snap)),
            "top_genres": genres,
            "n_interactions": pa.array(n_interactions, pa.int64()),
            "n_interactions_30d": pa.array(n_30d, pa.int64()),
            "mean_rating": pa.array(mean_rating, pa.float64(), from_pandas=True),
            "days_since_first": pa.array(days_since_first, pa.float64()),
        }
    )


class _FlatLists:
    def __init__(self, flat_rows: np.ndarray, parents: np.ndarray) -> None:
        self.flat_rows = flat_rows  # (V,) row index (in sorted order) of each list value
        self.parents = parents  # (V,) snapshot index of each list value, non-decreasing


def _recent_distinct_items(
    u: np.ndarray, it: np.ndarray, user_start: np.ndarray, snap: np.ndarray, *, n_items: int
) -> _FlatLists:
    """For each snapshot row j: the rows of the last ``n_items`` distinct items among the user's rows <= j.

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

    S = len(snap)
    need = np.minimum(distinct_so_far[snap], n_items)  # (S,)
    pending = np.arange(S)
    width = n_items
    max_len = int((snap - user_start[snap]).max(initial=0)) + 1
    row_lists: list[tuple[np.ndarray, np.ndarray]] = []
    while pending.size:
        j = snap[pending]  # (P,)
        idx = j[:, None] - np.arange(width)[None, :]  # (P, W) rows j, j-1, ..., j-W+1
        inside = idx >= user_start[j][:, None]  # (P, W)
        safe = np.where(inside, idx, 0)
        current = inside & (next_same[safe] > j[:, None])  # (P, W)
        take = current & (np.cumsum(current, axis=1) <= n_items)  # (P, W)
        found = take.sum(axis=1)  # (P,)
        done = (found >= need[pending]) | (width >= max_len)
        rows_done, cols_done = np.nonzero(take[done])
        row_lists.append((pending[done][rows_done], safe[done][rows_done, cols_done]))
        pending = pending[~done]
        width *= 2
    parents = np.concatenate([p for p, _ in row_lists]) if row_lists else np.empty(0, np.int64)
    flat = np.concatenate([f for _, f in row_lists]) if row_lists else np.empty(0, np.int64)
    # Stable sort by snapshot keeps each snapshot's values in window order (most recent first).
    order = np.argsort(parents, kind="stable")
    return _FlatLists(flat_rows=flat[order], parents=parents[order])


def _top_genres(
    it: np.ndarray, user_start: np.ndarray, snap: np.ndarray, *, items: np.ndarray, item_profile: pa.Table, k: int
) -> pa.ListArray:
    """The k most frequent genres among the user's interactions so far (count desc, then name), zero counts left out."""
    genre_lists = item_profile.column("genres").combine_chunks()
    genre_codes, genre_names = _codes(pc.list_flatten(genre_lists))  # genre_names sorted: ties go by name
    profile_row = pc.index_in(pa.array(items, pa.string()), value_set=item_profile.column("item_id").combine_chunks())
    profile_row = profile_row.to_numpy(zero_copy_only=False)  # (n_items,) row in item_profile, NaN = not there
    n_genres = len(genre_names)
    multi_hot = np.zeros((len(items) + 1, max(n_genres, 1)), dtype=np.int32)  # (n_items + 1, G); last row: no genres
    parents = pc.list_parent_indices(genre_lists).to_numpy()  # (V,) profile row of each genre value
    row_to_item = np.full(item_profile.num_rows, len(items), dtype=np.int64)
    known = ~np.isnan(profile_row.astype(np.float64))
    row_to_item[profile_row[known].astype(np.int64)] = np.flatnonzero(known)
    np.add.at(multi_hot, (row_to_item[parents], genre_codes), 1)
    multi_hot[len(items)] = 0
    multi_hot = np.minimum(multi_hot, 1)
    counts = segment_cumsum(multi_hot[it], user_start)[snap]  # (S, G)
    top = np.argsort(-counts, axis=1, kind="stable")[:, :k]  # (S, k) genre codes, ties by name
    top_counts = np.take_along_axis(counts, top, axis=1)  # (S, k)
    rows, cols = np.nonzero(top_counts > 0)
    values = pa.array(np.asarray(genre_names, dtype=object)[top[rows, cols]], pa.string())
    return lists_from_parents(values, rows, length=len(snap))


def _first_row_after(u: np.ndarray, t: np.ndarray, snap: np.ndarray, *, window: int) -> np.ndarray:
    """For each snapshot row j: the first row of j's user with t > t[j] - window (rows sorted by user, time)."""
    bounds = t[snap] - window  # (S,)
    values, inverse = np.unique(np.concatenate([t, bounds]), return_inverse=True)
    rank = inverse[: len(t)]  # dense time ranks, so that (user, rank) packs into one int64 key
    bound_rank = inverse[len(t) :]
    key = u.astype(np.int64) * (len(values) + 1) + rank  # (n,) non-decreasing
    bound_key = u[snap].astype(np.int64) * (len(values) + 1) + bound_rank
    return np.searchsorted(key, bound_key, side="right")


def segment_cumsum(values: np.ndarray, user_start: np.ndarray) -> np.ndarray:
    """Cumulative sum that restarts at each user's first row (rows sorted by user); works on (n,) and (n, G)."""
    total = np.cumsum(values, axis=0)
    before = np.concatenate([np.zeros_like(total[:1]), total[:-1]], axis=0)
    return total - before[user_start]


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a string column and the sorted distinct values they index."""
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)
    if values.size == 0:
        return np.empty(0, np.int64), np.empty(0, dtype=object)
    distinct, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.astype(np.int64), distinct.astype(object)
