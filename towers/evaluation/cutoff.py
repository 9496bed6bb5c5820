"""The cutoff protocol (secondary): one query per user with the history as of a cutoff, set-based metrics.

The protocol is written out in ``docs/evaluation.md``. The targets are the distinct fit items a user interacts with in
the evaluation period (minus that history); set-based Recall@K = hits / |targets| and NDCG@K = DCG / ideal DCG,
averaged over users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from towers.evaluation.history import InteractionHistory
from towers.evaluation.items import FitItems
from towers.evaluation.metrics import KS, mean_or_nan
from towers.evaluation.ranking import Scorer, excluded_columns, rank_targets, score_matrix
from towers.evaluation.report import CutoffReport
from towers.evaluation.split import InteractionLog, as_int64_time


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
        scores = score_matrix(score_users, chunk_users, fit=fit, n_items=log.n_items)  # (B, F)
        excluded = excluded_columns(history.batch_at(chunk_users, cutoff=cutoff), fit=fit)  # (B, F)
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
        metrics={key: mean_or_nan(values) for key, values in metrics.items()},
        standard_errors={
            key: float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")
            for key, values in metrics.items()
        },
        n_users=int(users.size),
        n_targets=int(pair_users.size),
        cutoff=cutoff,
        n_fit_items=len(fit),
    )
