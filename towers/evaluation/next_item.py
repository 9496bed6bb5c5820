"""Full-corpus evaluation on a time-based split: the next-item protocol, the cutoff protocol and their reports.

Everything works in index space: interactions are numpy arrays of user codes, item codes and timestamps, plus the
period (``train`` / ``validation`` / ``test``) each belongs to. The protocol (see EVALUATION.md):

- Next-item (primary): every interaction (u, i, t) of the evaluation period is one query. Its history is u's distinct
  items with a timestamp strictly before t, from any period (interactions sharing a timestamp do not see each other).
  Queries whose target is not an item of the fit data, or is already in the history (a repeat), are skipped and
  counted; queries with an empty history are kept. Items are ranked over all fit items minus the history items; ties
  are broken by fit popularity (more popular first, then the lower item code), so an empty history and constant
  scores yield the most-popular list. R@K = HR@K = 1[rank <= K], NDCG@K = 1/log2(rank + 1) within K, MRR = 1/rank
  (0 beyond rank 100).
- Cutoff (secondary): one query per user with the history as of the cutoff; the targets are the distinct fit items
  the user interacts with in the evaluation period (minus that history); set-based Recall@K = hits / |targets| and
  NDCG@K = DCG / ideal DCG.

A model enters through a scorer callback, ``score(query_rows) -> float32 [len(query_rows), F]`` (or
``[len(query_rows), n_items]``, columns then being item codes), where ``query_rows`` are positions in the
interaction arrays and the F columns are the fit items in ascending code order (``FitItems.items``). The harness
never looks at a whole score matrix: it scores queries in chunks and counts, per query, the ranked items that beat
the target, which is the exact rank with memory bounded by chunk x items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

PERIODS: tuple[str, ...] = ("train", "validation", "test")
KS: tuple[int, ...] = (10, 50, 100)
MRR_DEPTH = 100  # MRR counts 1/rank up to this rank, 0 beyond
HEAD_SHARE = 0.2  # head = the most popular 20% of fit items
TAIL_MAX_COUNT = 5  # tail = fit items with at most 5 fit interactions
POPULARITY_BUCKETS: tuple[str, ...] = ("head", "torso", "tail")

Scorer = Callable[[np.ndarray], np.ndarray]


# --- interactions and the time split -------------------------------------------------------------------------------


def as_int64_time(values: Any) -> np.ndarray:
    """Timestamps as int64: integers are kept as they are (e.g. epoch seconds), datetime64 becomes epoch nanoseconds."""
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.datetime64):
        return array.astype("datetime64[ns]").astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"timestamps must be int64 epoch values or datetime64, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


@dataclass(frozen=True)
class TimeSplit:
    """Global cutoffs of the split: train ts < cutoff_validation <= validation ts < cutoff_test <= test ts."""

    cutoff_validation: int
    cutoff_test: int

    @classmethod
    def from_timestamps(cls, timestamps: Any, *, validation_start: float = 0.8, test_start: float = 0.9) -> TimeSplit:
        """cutoff_validation = ts_sorted[floor(0.8 N)], cutoff_test = ts_sorted[floor(0.9 N)]."""
        ts = np.sort(as_int64_time(timestamps))
        if ts.size == 0:
            raise ValueError("cannot split an empty set of interactions by time")
        if not 0.0 < validation_start <= test_start < 1.0:
            raise ValueError("the split needs 0 < validation_start <= test_start < 1")
        n = ts.size
        return cls(int(ts[math.floor(validation_start * n)]), int(ts[math.floor(test_start * n)]))

    def periods(self, timestamps: Any) -> np.ndarray:
        """(N,) period label of each timestamp: 'train', 'validation' or 'test'."""
        ts = as_int64_time(timestamps)
        index = (ts >= self.cutoff_validation).astype(np.int64) + (ts >= self.cutoff_test)  # (N,) in {0, 1, 2}
        return np.asarray(PERIODS)[index]


@dataclass(frozen=True, eq=False)
class InteractionLog:
    """All interactions of a dataset in index space, each with its period."""

    user_codes: np.ndarray  # (N,) int64 in [0, n_users)
    item_codes: np.ndarray  # (N,) int64 in [0, n_items)
    timestamps: np.ndarray  # (N,) int64 (epoch seconds, or nanoseconds for datetime64 input)
    periods: np.ndarray  # (N,) labels, normally 'train' / 'validation' / 'test'
    n_users: int
    n_items: int

    def __post_init__(self) -> None:
        users = np.asarray(self.user_codes).astype(np.int64, copy=False)
        items = np.asarray(self.item_codes).astype(np.int64, copy=False)
        timestamps = as_int64_time(self.timestamps)
        periods = np.asarray(self.periods)
        n = users.shape[0]
        if users.ndim != 1 or items.shape != (n,) or timestamps.shape != (n,) or periods.shape != (n,):
            raise ValueError(
                "InteractionLog needs 1-D user_codes, item_codes, timestamps and periods of one length; got shapes "
                f"{users.shape}, {items.shape}, {timestamps.shape}, {periods.shape}"
            )
        if n and (users.min() < 0 or users.max() >= self.n_users):
            raise ValueError(f"InteractionLog user_codes must lie in [0, n_users={self.n_users}); re-encode the users")
        if n and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"InteractionLog item_codes must lie in [0, n_items={self.n_items}); re-encode the items")
        object.__setattr__(self, "user_codes", users)
        object.__setattr__(self, "item_codes", items)
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "periods", periods)
        object.__setattr__(self, "n_users", int(self.n_users))
        object.__setattr__(self, "n_items", int(self.n_items))

    @classmethod
    def split_by_time(
        cls, user_codes: Any, *, item_codes: Any, timestamps: Any, n_users: int, n_items: int
    ) -> InteractionLog:
        """A log whose periods come from the global 80% / 90% time cutoffs of EVALUATION.md."""
        split = TimeSplit.from_timestamps(timestamps)
        return cls(user_codes, item_codes, timestamps, split.periods(timestamps), n_users, n_items)

    def __len__(self) -> int:
        return int(self.user_codes.shape[0])

    def mask(self, periods: str | Sequence[str]) -> np.ndarray:
        """(N,) bool: the interactions of the named period(s)."""
        names = [periods] if isinstance(periods, str) else list(periods)
        known = set(np.unique(self.periods).tolist())
        missing = [p for p in names if p not in known]
        if missing:
            raise ValueError(f"InteractionLog has no period {missing}; its periods are {sorted(known)}")
        return np.isin(self.periods, names)


# --- histories -----------------------------------------------------------------------------------------------------


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


# --- fit items and categories --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FitItems:
    """The items of the fit data: the ranked columns, their popularity order and popularity buckets."""

    items: np.ndarray  # (F,) item codes, ascending: column j of a score matrix is items[j]
    counts: np.ndarray  # (F,) fit interactions per item
    column_of_item: np.ndarray  # (n_items,) column of each item code, -1 when not a fit item
    tie_position: np.ndarray  # (F,) position in the popularity order (count descending, then code ascending)
    bucket: np.ndarray  # (F,) int8: 0 head, 1 torso, 2 tail

    @classmethod
    def build(cls, item_codes: np.ndarray, *, n_items: int) -> FitItems:
        all_counts = np.bincount(np.asarray(item_codes, dtype=np.int64), minlength=n_items)  # (n_items,)
        items = np.flatnonzero(all_counts)
        if items.size == 0:
            raise ValueError("the fit data holds no interactions; choose fit periods that contain some")
        counts = all_counts[items]
        column_of_item = np.full(n_items, -1, dtype=np.int64)
        column_of_item[items] = np.arange(items.size)
        popularity_order = np.lexsort((items, -counts))  # (F,) most popular first
        tie_position = np.empty(items.size, dtype=np.int64)
        tie_position[popularity_order] = np.arange(items.size)
        n_head = int(round(HEAD_SHARE * items.size))
        bucket = np.where(counts <= TAIL_MAX_COUNT, 2, 1).astype(np.int8)
        bucket[tie_position < n_head] = 0
        return cls(items, counts, column_of_item, tie_position, bucket)

    def __len__(self) -> int:
        return int(self.items.shape[0])


@dataclass(frozen=True, eq=False)
class CategoryIndex:
    """Categories of each item code as CSR: item i belongs to names[codes[indptr[i]:indptr[i + 1]]]."""

    indptr: np.ndarray  # (n_items + 1,)
    codes: np.ndarray  # (nnz,) category codes
    names: tuple[str, ...]

    @classmethod
    def from_lists(cls, item_categories: Sequence[Sequence[str]]) -> CategoryIndex:
        """item_categories[i] lists the categories of item code i (empty when it has none)."""
        lengths = np.fromiter((len(c) for c in item_categories), dtype=np.int64, count=len(item_categories))
        flat = np.asarray([name for names in item_categories for name in names], dtype=object)
        names, codes = np.unique(flat.astype(str), return_inverse=True) if flat.size else (np.array([]), flat)
        indptr = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return cls(indptr, np.asarray(codes, dtype=np.int64), tuple(str(n) for n in names))

    @classmethod
    def coerce(cls, value: Any, *, n_items: int) -> CategoryIndex:
        index = value if isinstance(value, CategoryIndex) else None
        if index is None and isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], np.ndarray):
            indptr, codes, names = value
            index = cls(np.asarray(indptr, dtype=np.int64), np.asarray(codes, dtype=np.int64), tuple(names))
        if index is None:
            index = cls.from_lists(value)
        if index.indptr.shape[0] != n_items + 1:
            raise ValueError(
                f"item_categories covers {index.indptr.shape[0] - 1} items but the log has n_items={n_items}; "
                "give one entry per item code"
            )
        return index


# --- ranking and metrics -------------------------------------------------------------------------------------------


def rank_targets(
    scores: torch.Tensor,
    target_cols: torch.Tensor,
    *,
    tie_position: torch.Tensor,
    excluded: torch.Tensor,
) -> torch.Tensor:
    """Exact 1-based rank of each row's target among the columns not excluded.

    scores [P, F] float, target_cols [P] int64, tie_position [F] int64 (lower wins a tie of scores),
    excluded [P, F] bool (history columns; the target's own column must not be excluded). Returns ranks [P] int64:
    1 + the number of non-excluded columns with a higher score, or the same score and a lower tie position.
    """
    target_scores = scores.gather(1, target_cols[:, None])  # (P, 1)
    target_ties = tie_position[target_cols][:, None]  # (P, 1)
    beats = scores > target_scores  # (P, F)
    beats |= (scores == target_scores) & (tie_position[None, :] < target_ties)  # (P, F)
    beats &= ~excluded
    return beats.sum(dim=1) + 1  # (P,)


def next_item_metrics(ranks: np.ndarray, *, ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
    """Per-query metrics of 1-based target ranks [Q]: recall@K (= hit rate), ndcg@K and mrr."""
    ranks = np.asarray(ranks, dtype=np.float64)
    gain = 1.0 / np.log2(ranks + 1.0)  # (Q,)
    metrics: dict[str, np.ndarray] = {}
    for k in ks:
        metrics[f"recall@{k}"] = (ranks <= k).astype(np.float64)
    for k in ks:
        metrics[f"ndcg@{k}"] = np.where(ranks <= k, gain, 0.0)
    metrics["mrr"] = np.where(ranks <= MRR_DEPTH, 1.0 / ranks, 0.0)
    return metrics


def clustered_standard_error(values: np.ndarray, *, clusters: np.ndarray) -> float:
    """Standard error of the mean of ``values`` with observations clustered (e.g. by user), small-sample corrected.

    se = sqrt(G / (G - 1) * sum_g (sum_{q in g} (x_q - mean))^2) / N for G clusters and N values.
    """
    values = np.asarray(values, dtype=np.float64)
    _, cluster_ids = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = int(cluster_ids.max()) + 1 if cluster_ids.size else 0
    if n_clusters < 2:
        return float("nan")
    residual_sums = np.bincount(cluster_ids, weights=values - values.mean(), minlength=n_clusters)  # (G,)
    variance = n_clusters / (n_clusters - 1) * float(np.sum(residual_sums**2)) / values.size**2
    return math.sqrt(variance)


def _score_matrix(scorer: Scorer, query_keys: np.ndarray, *, fit: FitItems, n_items: int) -> torch.Tensor:
    """Call the scorer and return float32 [B, F] over the fit items."""
    scores = np.asarray(scorer(query_keys))
    if scores.ndim != 2 or scores.shape[0] != query_keys.shape[0] or scores.shape[1] not in (len(fit), n_items):
        raise ValueError(
            f"the scorer returned shape {scores.shape} for {query_keys.shape[0]} queries; it must return "
            f"[{query_keys.shape[0]}, {len(fit)}] (fit items) or [{query_keys.shape[0]}, {n_items}] (all item codes)"
        )
    if scores.shape[1] != len(fit):
        scores = scores[:, fit.items]  # (B, F)
    tensor = torch.as_tensor(np.ascontiguousarray(scores, dtype=np.float32))
    if torch.isnan(tensor).any():
        raise ValueError("the scorer returned NaN scores; fix the model (or replace NaN by -inf) before evaluating")
    return tensor


def _excluded_columns(batch: HistoryBatch, *, fit: FitItems) -> torch.Tensor:
    """bool [B, F]: the fit columns of each row's history items."""
    excluded = torch.zeros((batch.n_rows, len(fit)), dtype=torch.bool)  # (B, F)
    cols = fit.column_of_item[batch.indices]  # (nnz,)
    ranked = cols >= 0
    excluded[torch.as_tensor(batch.row_ids()[ranked]), torch.as_tensor(cols[ranked])] = True
    return excluded


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


# --- next-item protocol --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class NextItemQueries:
    """The queries of an evaluation period, after skipping unseen and repeated targets."""

    rows: np.ndarray  # (Q,) log rows of the kept queries, ordered by (user, timestamp)
    users: np.ndarray  # (Q,) user codes
    targets: np.ndarray  # (Q,) item codes
    target_cols: np.ndarray  # (Q,) fit columns of the targets
    history_lengths: np.ndarray  # (Q,) interactions before the query (0 = cold query)
    n_interactions: int  # interactions of the evaluation period
    n_unseen: int  # skipped: target not a fit item
    n_repeat: int  # skipped: target already in the history

    @classmethod
    def build(
        cls, log: InteractionLog, *, fit: FitItems, history: InteractionHistory, eval_mask: np.ndarray
    ) -> NextItemQueries:
        rows = np.flatnonzero(eval_mask)
        targets = log.item_codes[rows]
        unseen = fit.column_of_item[targets] < 0  # (E,)
        repeat = _is_repeat(log)[rows] & ~unseen  # (E,)
        kept = rows[~unseen & ~repeat]
        kept = kept[np.lexsort((kept, log.timestamps[kept], log.user_codes[kept]))]  # by user, then time
        start, end = history.bounds(kept)
        return cls(
            rows=kept,
            users=log.user_codes[kept],
            targets=log.item_codes[kept],
            target_cols=fit.column_of_item[log.item_codes[kept]],
            history_lengths=end - start,
            n_interactions=int(rows.size),
            n_unseen=int(unseen.sum()),
            n_repeat=int(repeat.sum()),
        )

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def _is_repeat(log: InteractionLog) -> np.ndarray:
    """(N,) bool: the same user interacted with the same item at an earlier timestamp."""
    keys = log.user_codes * log.n_items + log.item_codes  # (N,)
    order = np.lexsort((log.timestamps, keys))
    sorted_keys = keys[order]
    sorted_ts = log.timestamps[order]
    new_pair = np.ones(order.size, dtype=bool)
    new_pair[1:] = sorted_keys[1:] != sorted_keys[:-1]
    first_position = np.maximum.accumulate(np.where(new_pair, np.arange(order.size), 0))  # (N,)
    repeat = np.empty(order.size, dtype=bool)
    repeat[order] = sorted_ts[first_position] < sorted_ts
    return repeat


@dataclass(frozen=True)
class EvaluationReport:
    """Figures of one next-item evaluation. Metric means are over queries unless named ``_per_user``."""

    metrics: dict[str, float]  # recall@K, ndcg@K, mrr averaged over queries
    standard_errors: dict[str, float]  # clustered by user, for recall@K, ndcg@10 and mrr
    recall_per_user: float  # recall@100 averaged over a user's queries, then over users
    by_popularity: dict[str, dict[str, float]]  # head / torso / tail -> recall@100, n_queries
    by_category: dict[str, dict[str, float]]  # category -> recall@100, n_queries
    n_queries: int
    n_users: int
    n_cold: int  # kept queries with an empty history
    n_interactions: int  # interactions of the evaluation period
    n_skipped_unseen: int
    n_skipped_repeat: int
    n_fit_items: int
    protocol: str = "next_item"
    ranks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False, compare=False)

    def headline(self) -> dict[str, float]:
        """A flat dict of the figures a model version records."""
        n = max(self.n_interactions, 1)
        flat: dict[str, float] = {
            key: self.metrics[key] for key in ("recall@10", "recall@50", "recall@100", "ndcg@10", "ndcg@50", "mrr")
        }
        flat["recall@100_per_user"] = self.recall_per_user
        for bucket in POPULARITY_BUCKETS:
            flat[f"recall@100_{bucket}"] = self.by_popularity[bucket]["recall@100"]
        for name, figures in self.by_category.items():
            flat[f"recall@100_category={name}"] = figures["recall@100"]
        for key, value in self.standard_errors.items():
            flat[f"{key}_se"] = value
        flat["n_queries"] = float(self.n_queries)
        flat["n_users"] = float(self.n_users)
        flat["skipped_unseen_share"] = self.n_skipped_unseen / n
        flat["skipped_repeat_share"] = self.n_skipped_repeat / n
        flat["cold_share"] = self.n_cold / max(self.n_queries, 1)
        return flat

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "metrics": dict(self.metrics),
            "standard_errors": dict(self.standard_errors),
            "recall@100_per_user": self.recall_per_user,
            "by_popularity": {k: dict(v) for k, v in self.by_popularity.items()},
            "by_category": {k: dict(v) for k, v in self.by_category.items()},
            "n_queries": self.n_queries,
            "n_users": self.n_users,
            "n_cold": self.n_cold,
            "n_interactions": self.n_interactions,
            "n_skipped_unseen": self.n_skipped_unseen,
            "n_skipped_repeat": self.n_skipped_repeat,
            "n_fit_items": self.n_fit_items,
        }


def next_item_ranks(
    log: InteractionLog,
    score: Scorer,
    *,
    queries: NextItemQueries,
    fit: FitItems,
    history: InteractionHistory,
    chunk_size: int = 1024,
) -> np.ndarray:
    """(Q,) exact rank of each query's target, scoring ``chunk_size`` queries at a time."""
    ranks = np.empty(len(queries), dtype=np.int64)
    tie_position = torch.as_tensor(fit.tie_position)
    for begin in range(0, len(queries), chunk_size):
        chunk = slice(begin, begin + chunk_size)
        rows = queries.rows[chunk]
        scores = _score_matrix(score, rows, fit=fit, n_items=log.n_items)  # (B, F)
        excluded = _excluded_columns(history.batch_for_rows(rows), fit=fit)  # (B, F)
        target_cols = torch.as_tensor(queries.target_cols[chunk])
        ranks[chunk] = rank_targets(scores, target_cols, tie_position=tie_position, excluded=excluded).numpy()
    return ranks


def evaluate_next_item(
    log: InteractionLog,
    score: Scorer,
    *,
    fit_periods: str | Sequence[str] = ("train", "validation"),
    eval_period: str = "test",
    history: InteractionHistory | None = None,
    item_categories: Any = None,
    chunk_size: int = 1024,
) -> EvaluationReport:
    """The primary protocol: every interaction of ``eval_period`` is a query ranked over all fit items.

    score: ``score(query_rows) -> float32 [B, F]`` with query_rows the log rows of B queries (see the module doc).
    item_categories: ``list[list[str]]`` (one entry per item code), a ``CategoryIndex`` or (indptr, codes, names).
    """
    history = history if history is not None else InteractionHistory.build(log)
    fit = FitItems.build(log.item_codes[log.mask(fit_periods)], n_items=log.n_items)
    queries = NextItemQueries.build(log, fit=fit, history=history, eval_mask=log.mask(eval_period))
    ranks = next_item_ranks(log, score, queries=queries, fit=fit, history=history, chunk_size=chunk_size)
    per_query = next_item_metrics(ranks)
    recall = per_query["recall@100"]

    user_ids, user_index = np.unique(queries.users, return_inverse=True)
    per_user = np.bincount(user_index, weights=recall) / np.bincount(user_index)  # (U,)

    buckets = fit.bucket[queries.target_cols]  # (Q,)
    by_popularity = {
        name: {"recall@100": _mean(recall[buckets == code]), "n_queries": float(np.sum(buckets == code))}
        for code, name in enumerate(POPULARITY_BUCKETS)
    }
    by_category: dict[str, dict[str, float]] = {}
    if item_categories is not None:
        categories = CategoryIndex.coerce(item_categories, n_items=log.n_items)
        starts = categories.indptr[queries.targets]
        counts = categories.indptr[queries.targets + 1] - starts  # (Q,) categories per target
        total = int(counts.sum())
        offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
        pair_categories = categories.codes[offsets]  # (pairs,) a query once per category of its target
        pair_recall = np.repeat(recall, counts)
        n_names = len(categories.names)
        hits = np.bincount(pair_categories, weights=pair_recall, minlength=n_names)
        sizes = np.bincount(pair_categories, minlength=n_names)
        by_category = {
            name: {"recall@100": float(hits[c] / sizes[c]), "n_queries": float(sizes[c])}
            for c, name in enumerate(categories.names)
            if sizes[c] > 0
        }

    return EvaluationReport(
        metrics={key: _mean(values) for key, values in per_query.items()},
        standard_errors={
            key: clustered_standard_error(per_query[key], clusters=queries.users)
            for key in ("recall@10", "recall@50", "recall@100", "ndcg@10", "mrr")
        },
        recall_per_user=_mean(per_user),
        by_popularity=by_popularity,
        by_category=by_category,
        n_queries=len(queries),
        n_users=int(user_ids.size),
        n_cold=int(np.sum(queries.history_lengths == 0)),
        n_interactions=queries.n_interactions,
        n_skipped_unseen=queries.n_unseen,
        n_skipped_repeat=queries.n_repeat,
        n_fit_items=len(fit),
        ranks=ranks,
    )


def validation_recall(
    log: InteractionLog,
    score: Scorer,
    *,
    k: int = 100,
    fit_periods: str | Sequence[str] = "train",
    eval_period: str = "validation",
    history: InteractionHistory | None = None,
    chunk_size: int = 1024,
) -> float:
    """Recall@k of the next-item protocol on the validation period (model fit on train): an early-stopping signal."""
    if k not in KS:
        raise ValueError(f"validation_recall supports k in {KS}, got {k}")
    report = evaluate_next_item(
        log, score, fit_periods=fit_periods, eval_period=eval_period, history=history, chunk_size=chunk_size
    )
    return report.metrics[f"recall@{k}"]


# --- cutoff protocol -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CutoffReport:
    """Figures of one cutoff evaluation: set-based metrics averaged over users."""

    metrics: dict[str, float]  # recall@K, ndcg@K averaged over users
    standard_errors: dict[str, float]  # over users
    n_users: int
    n_targets: int
    cutoff: int
    n_fit_items: int
    protocol: str = "cutoff"

    def headline(self) -> dict[str, float]:
        flat = dict(self.metrics)
        flat.update({f"{key}_se": value for key, value in self.standard_errors.items()})
        flat["n_users"] = float(self.n_users)
        flat["n_targets"] = float(self.n_targets)
        return flat

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "metrics": dict(self.metrics),
            "standard_errors": dict(self.standard_errors),
            "n_users": self.n_users,
            "n_targets": self.n_targets,
            "cutoff": self.cutoff,
            "n_fit_items": self.n_fit_items,
        }


def evaluate_at_cutoff(
    log: InteractionLog,
    score_users: Scorer,
    *,
    fit_periods: str | Sequence[str] = ("train", "validation"),
    eval_period: str = "test",
    cutoff: int | None = None,
    history: InteractionHistory | None = None,
    ks: Sequence[int] = KS,
    chunk_size: int = 256,
) -> CutoffReport:
    """The secondary protocol: one query per user with the history as of ``cutoff``.

    score_users: ``score_users(user_codes) -> float32 [B, F]`` scoring each user from its history before the cutoff.
    cutoff: default the first timestamp of ``eval_period``. Targets are the user's distinct fit items of the
    evaluation period that are not in its history; users without targets are left out.
    """
    history = history if history is not None else InteractionHistory.build(log)
    fit = FitItems.build(log.item_codes[log.mask(fit_periods)], n_items=log.n_items)
    eval_rows = np.flatnonzero(log.mask(eval_period))
    cutoff = int(log.timestamps[eval_rows].min()) if cutoff is None else int(as_int64_time(cutoff))

    # distinct (user, target column) pairs, sorted by user
    cols = fit.column_of_item[log.item_codes[eval_rows]]
    pair_keys = np.unique(log.user_codes[eval_rows][cols >= 0] * len(fit) + cols[cols >= 0])
    pair_users, pair_cols = np.divmod(pair_keys, len(fit))
    users = np.unique(pair_users)
    in_history = np.zeros(pair_keys.size, dtype=bool)
    for begin in range(0, users.size, chunk_size):  # drop targets already in the history as of the cutoff
        chunk_users = users[begin : begin + chunk_size]
        batch = history.batch_at(chunk_users, cutoff=cutoff)
        batch_cols = fit.column_of_item[batch.indices]
        seen = np.unique(chunk_users[batch.row_ids()][batch_cols >= 0] * len(fit) + batch_cols[batch_cols >= 0])
        in_history |= np.isin(pair_keys, seen)
    pair_users, pair_cols = pair_users[~in_history], pair_cols[~in_history]
    users, pair_user_index = np.unique(pair_users, return_inverse=True)

    ranks = np.empty(pair_users.size, dtype=np.int64)
    tie_position = torch.as_tensor(fit.tie_position)
    pair_bounds = np.searchsorted(pair_user_index, np.arange(users.size + 1))  # pairs of user j: [b[j], b[j+1])
    for begin in range(0, users.size, chunk_size):
        chunk_users = users[begin : begin + chunk_size]
        scores = _score_matrix(score_users, chunk_users, fit=fit, n_items=log.n_items)  # (B, F)
        excluded = _excluded_columns(history.batch_at(chunk_users, cutoff=cutoff), fit=fit)  # (B, F)
        first, last = pair_bounds[begin], pair_bounds[begin + chunk_users.size]
        for pair_begin in range(first, last, chunk_size):  # bound memory: at most chunk_size pairs x F at once
            pairs = slice(pair_begin, min(pair_begin + chunk_size, last))
            local = torch.as_tensor(pair_user_index[pairs] - begin)  # (P,) rows of the chunk
            ranks[pairs] = rank_targets(
                scores[local],
                torch.as_tensor(pair_cols[pairs]),
                tie_position=tie_position,
                excluded=excluded[local],
            ).numpy()

    n_targets = np.bincount(pair_user_index, minlength=users.size).astype(np.float64)  # (U,)
    metrics: dict[str, np.ndarray] = {}
    for k in ks:
        hits = np.bincount(pair_user_index, weights=(ranks <= k).astype(np.float64), minlength=users.size)
        metrics[f"recall@{k}"] = hits / n_targets
    for k in ks:
        gains = np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)
        dcg = np.bincount(pair_user_index, weights=gains, minlength=users.size)  # (U,)
        ideal_gains = np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1.0))  # (k,) ideal DCG of 1..k targets
        ideal = ideal_gains[np.minimum(n_targets, k).astype(np.int64) - 1]  # (U,)
        metrics[f"ndcg@{k}"] = dcg / ideal
    return CutoffReport(
        metrics={key: _mean(values) for key, values in metrics.items()},
        standard_errors={
            key: float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")
            for key, values in metrics.items()
        },
        n_users=int(users.size),
        n_targets=int(pair_users.size),
        cutoff=cutoff,
        n_fit_items=len(fit),
    )
