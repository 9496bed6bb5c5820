"""Exact ranks of targets over score matrices, with history columns excluded and ties broken by fit popularity.

The protocol is written out in ``docs/evaluation.md``. A model enters through a scorer callback ``score(query_rows) ->
float32 [B, F]`` (or ``[B, n_items]``, columns then being item codes); the harness scores queries in chunks and
counts, per query, the ranked items that beat the target, which is the exact rank with memory bounded by chunk x
items.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from towers.errors import TowersInputError
from towers.evaluation.history import HistoryBatch
from towers.evaluation.items import FitItems

Scorer = Callable[[np.ndarray], np.ndarray]


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


def score_matrix(scorer: Scorer, query_keys: np.ndarray, *, fit: FitItems, n_items: int) -> torch.Tensor:
    """Call the scorer and return float32 [B, F] over the fit items."""
    scores = np.asarray(scorer(query_keys))
    if scores.ndim != 2 or scores.shape[0] != query_keys.shape[0] or scores.shape[1] not in (len(fit), n_items):
        raise TowersInputError(
            f"the scorer returned shape {scores.shape} for {query_keys.shape[0]} queries; it must return "
            f"[{query_keys.shape[0]}, {len(fit)}] (fit items) or [{query_keys.shape[0]}, {n_items}] (all item codes)"
        )
    if scores.shape[1] != len(fit):
        scores = scores[:, fit.items]  # (B, F)
    tensor = torch.as_tensor(np.ascontiguousarray(scores, dtype=np.float32))
    if torch.isnan(tensor).any():
        raise TowersInputError("the scorer returned NaN scores; fix the model (or replace NaN by -inf) before evaluating")
    return tensor


def excluded_columns(batch: HistoryBatch, *, fit: FitItems) -> torch.Tensor:
    """bool [B, F]: the fit columns of each row's history items."""
    excluded = torch.zeros((batch.n_rows, len(fit)), dtype=torch.bool)  # (B, F)
    cols = fit.column_of_item[batch.indices]  # (nnz,)
    ranked = cols >= 0
    excluded[torch.as_tensor(batch.row_ids()[ranked]), torch.as_tensor(cols[ranked])] = True
    return excluded
