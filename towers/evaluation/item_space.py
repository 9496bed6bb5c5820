"""The item space of a history model and the scoring of item-item models: score = history @ weights.

``ItemSpace`` holds the items a model covers (columns of its matrices) and builds the sparse user x item matrix over
them; ``LinearItemModel`` scores histories as (sparse history) @ (weights over the covered items), one chunk of queries
at a time, and puts ``uncovered_score`` on the items it does not cover. Nothing here is users x items dense: the fit
matrix is scipy CSR, a history batch is CSR, and a score block is [chunk, covered items].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from towers.errors import TowersInputError
from towers.evaluation.history import HistoryBatch, PrefixIncrements


def check_fit_codes(user_codes: Any, item_codes: Any, *, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The fit interactions as int64 arrays, refused when empty, of unequal length or out of [0, n)."""
    users = np.asarray(user_codes, dtype=np.int64)
    items = np.asarray(item_codes, dtype=np.int64)
    if users.ndim != 1 or users.shape != items.shape or users.size == 0:
        raise TowersInputError(
            f"fit needs non-empty 1-D user_codes and item_codes of one length, got {users.shape} and {items.shape}"
        )
    if users.min() < 0 or users.max() >= n_users or items.min() < 0 or items.max() >= n_items:
        raise TowersInputError(f"fit codes must lie in [0, n_users={n_users}) and [0, n_items={n_items}); re-encode them")
    return users, items


@dataclass(frozen=True, eq=False)
class ItemSpace:
    """The items a model covers (ascending item codes) and the column of each item code in its matrices."""

    items: np.ndarray  # (F,) item codes, ascending
    column_of_item: np.ndarray  # (n_items,) column in [0, F) or -1
    n_items: int

    @classmethod
    def of(cls, covered: np.ndarray, *, n_items: int) -> ItemSpace:
        items = np.unique(np.asarray(covered, dtype=np.int64))
        column_of_item = np.full(n_items, -1, dtype=np.int64)
        column_of_item[items] = np.arange(items.size)
        return cls(items, column_of_item, n_items)

    @classmethod
    def seen(cls, item_codes: np.ndarray, *, n_items: int) -> ItemSpace:
        """The items with at least one fit interaction."""
        return cls.of(np.flatnonzero(np.bincount(item_codes, minlength=n_items)), n_items=n_items)

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def user_item_matrix(self, user_codes: np.ndarray, item_codes: np.ndarray, *, dtype: Any = np.float32) -> sp.csr_matrix:
        """Binary CSR [U', F] over the users with a covered item; repeated pairs count once."""
        cols = self.column_of_item[item_codes]
        covered = cols >= 0
        _, rows = np.unique(user_codes[covered], return_inverse=True)  # users with a covered item
        rows, cols = rows.reshape(-1), cols[covered]
        matrix = sp.csr_matrix(
            (np.ones(rows.size, dtype=dtype), (rows, cols)), shape=(int(rows.max(initial=-1)) + 1, len(self))
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    def history_matrix(self, batch: HistoryBatch) -> sp.csr_matrix:
        """Binary CSR float32 [B, F] of the history items that this space covers."""
        cols = self.column_of_item[batch.indices]  # (nnz,) ascending within rows, as batch.indices are
        known = cols >= 0
        indptr = np.zeros(batch.n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(batch.row_ids()[known], minlength=batch.n_rows), out=indptr[1:])
        return sp.csr_matrix((np.ones(int(known.sum()), dtype=np.float32), cols[known], indptr),
                             shape=(batch.n_rows, len(self)))

    def scatter(self, scores: np.ndarray, *, fill: float) -> np.ndarray:
        """[B, F] scores over this space -> float32 [B, n_items] over all item codes (``fill`` elsewhere)."""
        full = np.full((scores.shape[0], self.n_items), fill, dtype=np.float32)  # (B, n_items)
        full[:, self.items] = scores
        return full


class LinearItemModel:
    """A model whose scores are history @ weights, weights [F, F] over the items of its space (dense or CSR).

    Items outside the space score ``uncovered_score``: 0 for ItemKNN (no similarity), -inf for an EASE restricted to
    the frequent items (never recommended; the harness breaks their ties by fit popularity).
    """

    uncovered_score: float = 0.0

    def __init__(self) -> None:
        self.space: ItemSpace | None = None
        self.weights: np.ndarray | sp.csr_matrix | None = None  # (F, F) float32

    def _fitted(self) -> tuple[ItemSpace, np.ndarray | sp.csr_matrix]:
        if self.space is None or self.weights is None:
            raise TowersInputError(f"{type(self).__name__} is not fitted; call fit() first")
        return self.space, self.weights

    def _product(self, history: sp.csr_matrix, *, dtype: Any) -> np.ndarray:
        """Dense [B, F] history @ weights."""
        _, weights = self._fitted()
        if sp.issparse(weights):
            return sparse_product(history, sp.csr_matrix(weights)).astype(dtype, copy=False)
        return np.asarray(history @ weights).astype(dtype, copy=False)


    def score_histories(self, batch: HistoryBatch) -> np.ndarray:
        space, _ = self._fitted()
        return space.scatter(self._product(space.history_matrix(batch), dtype=np.float32), fill=self.uncovered_score)

    def score_increments(self, increments: PrefixIncrements) -> np.ndarray:
        """Score each history as the running sum of its user's increments: far fewer products than one per history.

        Sorted position k sums rows segment_start[k]..k of increments @ weights: a cumulative sum, from which each
        user's segment subtracts the running total before its first query (segments in reverse order, in place). In
        float64, so that the subtraction loses nothing at float32 precision.
        """
        space, _ = self._fitted()
        running = self._product(space.history_matrix(increments.increments), dtype=np.float64)  # (B, F)
        np.cumsum(running, axis=0, out=running)
        starts = np.flatnonzero(np.r_[True, increments.segment_start[1:] != increments.segment_start[:-1]])
        ends = np.r_[starts[1:], running.shape[0]]
        for start, end in zip(starts[::-1], ends[::-1], strict=True):  # later segments first: row start-1 intact
            if start > 0:
                running[start:end] -= running[start - 1]
        scores = np.empty((running.shape[0], len(space)), dtype=np.float32)  # (B, F) in the queries' order
        scores[increments.order] = running
        return space.scatter(scores, fill=self.uncovered_score)


PRODUCT_ENTRIES = 1 << 23  # (history item, neighbour) pairs expanded at once by sparse_product


def sparse_product(history: sp.csr_matrix, weights: sp.csr_matrix, *, entries: int = PRODUCT_ENTRIES) -> np.ndarray:
    """Dense float64 [B, F] of binary-valued CSR history [B, F] times CSR weights [F, F].

    Each history item (b, i) contributes row i of the weights to row b: the pairs (b, j, w_ij) are expanded and
    summed by one bincount per group of rows holding about ``entries`` pairs. Far faster than a sparse x sparse
    product whose result is dense anyway, and bounded in memory whatever the history lengths.
    """
    n_rows, n_cols = history.shape[0], weights.shape[1]
    out = np.zeros((n_rows, n_cols), dtype=np.float64)  # (B, F)
    per_item = np.diff(weights.indptr)  # (F,) stored weights per row
    pairs = np.bincount(np.repeat(np.arange(n_rows), np.diff(history.indptr)), minlength=n_rows,
                        weights=per_item[history.indices])  # (B,) pairs of each history row
    bounds = np.searchsorted(np.cumsum(pairs), np.arange(entries, pairs.sum() + entries, entries), side="right")
    begin = 0
    for end in np.unique(np.r_[np.minimum(np.maximum(bounds, 1), n_rows), n_rows]):
        if end <= begin:
            continue
        lo, hi = history.indptr[begin], history.indptr[end]
        items = history.indices[lo:hi]  # (h,) history items of rows begin..end
        rows = np.repeat(np.arange(begin, end), np.diff(history.indptr[begin : end + 1]))  # (h,)
        counts = per_item[items]  # (h,)
        total = int(counts.sum())
        positions = np.repeat(weights.indptr[items] - (np.cumsum(counts) - counts), counts) + np.arange(total)
        values = weights.data[positions] * np.repeat(history.data[lo:hi], counts)  # (pairs,)
        keys = np.repeat(rows - begin, counts) * n_cols + weights.indices[positions]  # (pairs,)
        out[begin:end] = np.bincount(keys, weights=values, minlength=(end - begin) * n_cols).reshape(end - begin, n_cols)
        begin = end
    return out
