"""The next-item protocol (primary): every interaction of the evaluation period is one query ranked over all fit items.

The protocol is written out in ``docs/evaluation.md``. Queries whose target is not a fit item, or is already in the
history (a repeat), are skipped and counted; queries with an empty history are kept. Items are ranked over all fit
items minus the history items; ties are broken by fit popularity (more popular first, then the lower item code).
Breakdowns: by target popularity (head / torso / tail) and by category (a query counts in every category of its
target); standard errors clustered by user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from towers.errors import TowersInputError
from towers.evaluation.history import InteractionHistory
from towers.evaluation.items import POPULARITY_BUCKETS, CategoryIndex, FitItems
from towers.evaluation.metrics import KS, clustered_standard_error, mean_or_nan, next_item_metrics
from towers.evaluation.ranking import Scorer, excluded_columns, rank_targets, score_matrix
from towers.evaluation.report import EvaluationReport
from towers.evaluation.split import InteractionLog


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
        scores = score_matrix(score, rows, fit=fit, n_items=log.n_items)  # (B, F)
        excluded = excluded_columns(history.batch_for_rows(rows), fit=fit)  # (B, F)
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
        name: {"recall@100": mean_or_nan(recall[buckets == code]), "n_queries": float(np.sum(buckets == code))}
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
        metrics={key: mean_or_nan(values) for key, values in per_query.items()},
        standard_errors={
            key: clustered_standard_error(per_query[key], clusters=queries.users)
            for key in ("recall@10", "recall@50", "recall@100", "ndcg@10", "mrr")
        },
        recall_per_user=mean_or_nan(per_user),
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
        raise TowersInputError(f"validation_recall supports k in {KS}, got {k}")
    report = evaluate_next_item(
        log, score, fit_periods=fit_periods, eval_period=eval_period, history=history, chunk_size=chunk_size
    )
    return report.metrics[f"recall@{k}"]
