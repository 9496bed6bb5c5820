"""Users' histories as slices of one (user, time)-ordered array: distinct items strictly before a query, as CSR.

The protocol is written out in ``docs/evaluation.md``. Interactions sharing a timestamp do not see each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from towers.evaluation.split import InteractionLog


@dataclass(frozen=True, eq=False)
class HistoryBatch:
    """Distinct history items of a batch of queries as CSR: row b holds indices[indptr[b]:indptr[b + 1]] (sorted)."""

    indptr: np.ndarray  # (B + 1,) int64
    indices: np.ndarray  # (nnz,) int64 item codes
    n_items: int

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0] - 1)

    def row_ids(self) -> np.ndarray:
        """(nnz,) the row of each stored item."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), np.diff(self.indptr))

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def to_dense(self) -> np.ndarray:
        """float32 [B, n_items] binary history matrix."""
        dense = np.zeros((self.n_rows, self.n_items), dtype=np.float32)  # (B, n_items)
        dense[self.row_ids(), self.indices] = 1.0
        return dense


@dataclass(frozen=True, eq=False)
class PrefixIncrements:
    """Histories of a batch of queries as running sums: each user's queries in time order, each holding only the
    items that are new since the user's previous query of the batch.

    A model linear in the binary history scores query k as the sum of its increments from ``segment_start[k]`` to k.
    """

    order: np.ndarray  # (B,) the queries in (user, time) order: sorted position k holds query order[k]
    increments: HistoryBatch  # row k (sorted order): distinct items first seen since the previous query of the user
    segment_start: np.ndarray  # (B,) sorted position of the first query of the same user


@dataclass(frozen=True, eq=False)
class InteractionHistory:
    """Each user's interactions in time order, so that any history is one slice of ``items``.

    ``row_end[r]`` ends the slice of interactions of row r's user strictly before row r's timestamp (the first
    interaction of the run that shares r's timestamp), ``row_start[r]`` begins r's user's slice. ``first_seen`` marks
    the first occurrence of each (user, item) pair, so that the marked items of a slice that begins at the user's
    start are that history's distinct items.
    """

    items: np.ndarray  # (N,) item codes ordered by (user, timestamp)
    timestamps: np.ndarray  # (N,) the same order
    first_seen: np.ndarray  # (N,) bool, the same order
    user_indptr: np.ndarray  # (n_users + 1,) user u's interactions: items[user_indptr[u]:user_indptr[u + 1]]
    row_start: np.ndarray  # (N,) indexed by log row
    row_end: np.ndarray  # (N,) indexed by log row
    n_items: int

    @classmethod
    def build(cls, log: InteractionLog) -> InteractionHistory:
        order = np.lexsort((log.timestamps, log.user_codes))  # (N,) sorted by user, then timestamp
        users = log.user_codes[order]
        timestamps = log.timestamps[order]
        items = log.item_codes[order]
        positions = np.arange(order.size, dtype=np.int64)
        new_user = np.ones(order.size, dtype=bool)
        new_user[1:] = users[1:] != users[:-1]
        new_run = new_user.copy()  # a run = interactions of one user sharing one timestamp
        new_run[1:] |= timestamps[1:] != timestamps[:-1]
        run_start = np.maximum.accumulate(np.where(new_run, positions, 0))  # (N,) sorted order
        user_start = np.maximum.accumulate(np.where(new_user, positions, 0))  # (N,) sorted order
        row_start = np.empty_like(positions)
        row_end = np.empty_like(positions)
        row_start[order] = user_start
        row_end[order] = run_start
        pair_order = np.lexsort((positions, items, users))  # (N,) by (user, item, time)
        first_seen = np.zeros(order.size, dtype=bool)
        pair_keys = users[pair_order] * log.n_items + items[pair_order]
        first_of_pair = np.ones(order.size, dtype=bool)
        first_of_pair[1:] = pair_keys[1:] != pair_keys[:-1]
        first_seen[pair_order[first_of_pair]] = True
        user_indptr = np.zeros(log.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(log.user_codes, minlength=log.n_users), out=user_indptr[1:])
        return cls(items, timestamps, first_seen, user_indptr, row_start, row_end, log.n_items)

    def bounds(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) of the history of each log row (interactions strictly before it)."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.row_start[rows], self.row_end[rows]

    def bounds_at(self, users: np.ndarray, *, cutoff: int) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) of each user's history strictly before ``cutoff``."""
        users = np.asarray(users, dtype=np.int64)
        n_users = self.user_indptr.shape[0] - 1
        owner = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(self.user_indptr))  # (N,) sorted order
        before = np.bincount(owner[self.timestamps < cutoff], minlength=n_users)  # (n_users,)
        start = self.user_indptr[users]
        return start, start + before[users]

    def batch(self, start: np.ndarray, end: np.ndarray) -> HistoryBatch:
        """The items of each slice [start, end) that are first occurrences, as a CSR batch sorted within rows.

        For a slice that begins at its user's start these are the history's distinct items; for a later slice, the
        items the user had not met before it.
        """
        lengths = np.asarray(end, dtype=np.int64) - np.asarray(start, dtype=np.int64)  # (B,)
        total = int(lengths.sum())
        row_offsets = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=row_offsets[1:])
        rows = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)  # (total,)
        positions = np.repeat(np.asarray(start, dtype=np.int64) - row_offsets[:-1], lengths) + np.arange(total)
        first = self.first_seen[positions]
        keys = np.sort(rows[first] * self.n_items + self.items[positions[first]])  # (nnz,) sorted by (row, item)
        rows, items = np.divmod(keys, self.n_items)
        indptr = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=lengths.size), out=indptr[1:])
        return HistoryBatch(indptr, items, self.n_items)

    def batch_for_rows(self, rows: np.ndarray) -> HistoryBatch:
        return self.batch(*self.bounds(rows))

    def batch_at(self, users: np.ndarray, *, cutoff: int) -> HistoryBatch:
        return self.batch(*self.bounds_at(users, cutoff=cutoff))

    def increments(self, start: np.ndarray, end: np.ndarray) -> PrefixIncrements:
        """The histories [start, end) (each beginning at its user's start) as running increments."""
        start = np.asarray(start, dtype=np.int64)
        end = np.asarray(end, dtype=np.int64)
        order = np.lexsort((end, start))  # (B,) by user (its start), then history length
        sorted_start, sorted_end = start[order], end[order]
        new_segment = np.ones(order.size, dtype=bool)
        new_segment[1:] = sorted_start[1:] != sorted_start[:-1]
        previous_end = np.where(new_segment, sorted_start, np.concatenate(([0], sorted_end[:-1])))  # (B,)
        segment_start = np.maximum.accumulate(np.where(new_segment, np.arange(order.size), 0))  # (B,)
        return PrefixIncrements(order, self.batch(previous_end, sorted_end), segment_start)

    def increments_for_rows(self, rows: np.ndarray) -> PrefixIncrements:
        return self.increments(*self.bounds(rows))

    def increments_at(self, users: np.ndarray, *, cutoff: int) -> PrefixIncrements:
        return self.increments(*self.bounds_at(users, cutoff=cutoff))
