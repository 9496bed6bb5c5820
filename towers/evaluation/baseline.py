"""Classical baselines scored from the same histories as the towers: MostPopular, ItemKNN and EASE.

Each model has ``fit(user_codes, *, item_codes, n_users, n_items)`` on the fit interactions (every interaction is an
implicit positive) and ``score_histories(batch) -> float32 [B, n_items]`` for a ``HistoryBatch`` of distinct history
items. ``next_item_scorer`` / ``cutoff_scorer`` turn a fitted model into the callbacks of ``towers/evaluation/next_item.py``, and
``tune`` picks a hyper-parameter on the validation period (model fit on train), as ``docs/evaluation.md`` prescribes.

    MostPopular  score_j = fit count of j (the same list for every query)
    ItemKNN      S = cosine similarity of item columns of the binary user x item matrix X, zero diagonal, each item
                 keeps its ``neighbours`` most similar items; score = history @ S
    EASE         B = I - P diagMat(1 / diag(P)) with P = (X^T X + lambda I)^-1 (Steck, WWW 2019); score = history @ B

Dense matrices over the fit items are used: F^2 float32 (9.7k items: 380 MB) is fine at MovieLens sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from towers.errors import TowersInputError
from towers.evaluation.history import HistoryBatch, InteractionHistory, PrefixIncrements
from towers.evaluation.next_item import evaluate_next_item
from towers.evaluation.ranking import Scorer
from towers.evaluation.split import InteractionLog

EASE_LAMBDAS: tuple[float, ...] = (50.0, 200.0, 500.0, 1000.0)


class HistoryModel(Protocol):
    def fit(self, user_codes: np.ndarray, *, item_codes: np.ndarray, n_users: int, n_items: int) -> Any: ...

    def score_histories(self, batch: HistoryBatch) -> np.ndarray:
        """float32 [B, n_items] for B histories."""
        ...

    def score_increments(self, increments: PrefixIncrements) -> np.ndarray:
        """float32 [B, n_items] for the B histories of ``increments`` (in their original order)."""
        ...


def _check_codes(user_codes: Any, item_codes: Any, *, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
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
class _ItemSpace:
    """The items seen in the fit data and the binary user x item matrix over them."""

    items: np.ndarray  # (F,) item codes, ascending
    column_of_item: np.ndarray  # (n_items,) column in [0, F) or -1
    n_items: int

    @classmethod
    def build(cls, item_codes: np.ndarray, *, n_items: int) -> _ItemSpace:
        items = np.flatnonzero(np.bincount(item_codes, minlength=n_items))
        column_of_item = np.full(n_items, -1, dtype=np.int64)
        column_of_item[items] = np.arange(items.size)
        return cls(items, column_of_item, n_items)

    def binary_matrix(self, user_codes: np.ndarray, item_codes: np.ndarray, *, dtype: torch.dtype) -> torch.Tensor:
        """[U', F] 0/1 matrix over the users that appear (repeated pairs count once)."""
        _, rows = np.unique(user_codes, return_inverse=True)
        matrix = torch.zeros((int(rows.max()) + 1, self.items.size), dtype=dtype)  # (U', F)
        matrix[torch.as_tensor(rows), torch.as_tensor(self.column_of_item[item_codes])] = 1.0
        return matrix

    def history_matrix(self, batch: HistoryBatch) -> torch.Tensor:
        """Sparse (COO, coalesced) float32 [B, F] of the history items that are items of this space."""
        cols = self.column_of_item[batch.indices]  # (nnz,) ascending within rows, as batch.indices are
        known = cols >= 0
        indices = np.stack([batch.row_ids()[known], cols[known]])  # (2, nnz)
        return torch.sparse_coo_tensor(
            torch.as_tensor(indices),
            torch.ones(indices.shape[1], dtype=torch.float32),
            size=(batch.n_rows, self.items.size),
            is_coalesced=True,
            check_invariants=False,
        )

    def scatter(self, scores: torch.Tensor) -> np.ndarray:
        """[B, F] scores over this space -> float32 [B, n_items] over all item codes (0 elsewhere)."""
        full = np.zeros((scores.shape[0], self.n_items), dtype=np.float32)  # (B, n_items)
        full[:, self.items] = scores.numpy()
        return full


class MostPopular:
    """score_j = number of fit interactions of item j, whatever the history."""

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None  # (n_items,) float32

    def fit(self, user_codes: Any, *, item_codes: Any, n_users: int, n_items: int) -> MostPopular:
        _, items = _check_codes(user_codes, item_codes, n_users=n_users, n_items=n_items)
        self.counts = np.bincount(items, minlength=n_items).astype(np.float32)
        return self

    def score_histories(self, batch: HistoryBatch) -> np.ndarray:
        if self.counts is None:
            raise TowersInputError("MostPopular is not fitted; call fit() first")
        return np.broadcast_to(self.counts, (batch.n_rows, self.counts.size)).copy()  # (B, n_items)

    def score_increments(self, increments: PrefixIncrements) -> np.ndarray:
        return self.score_histories(increments.increments)


class _LinearItemModel:
    """A model whose scores are history @ weights, weights [F, F] over the fit items."""

    def __init__(self) -> None:
        self.space: _ItemSpace | None = None
        self.weights: torch.Tensor | None = None  # (F, F) float32

    def score_histories(self, batch: HistoryBatch) -> np.ndarray:
        if self.space is None or self.weights is None:
            raise TowersInputError(f"{type(self).__name__} is not fitted; call fit() first")
        history = self.space.history_matrix(batch)  # sparse (B, F)
        return self.space.scatter(torch.sparse.mm(history, self.weights))  # (B, n_items)

    def score_increments(self, increments: PrefixIncrements) -> np.ndarray:
        """Score each history as the running sum of its user's increments: far fewer products than one per history.

        Sorted position k sums rows segment_start[k]..k of increments @ weights (a cumulative sum minus the one
        before the user's first query), in float64 so that the subtraction loses nothing at float32 precision.
        """
        if self.space is None or self.weights is None:
            raise TowersInputError(f"{type(self).__name__} is not fitted; call fit() first")
        partial = torch.sparse.mm(self.space.history_matrix(increments.increments), self.weights)  # (B, F)
        running = torch.cumsum(partial.to(torch.float64), dim=0)  # (B, F)
        first = torch.as_tensor(increments.segment_start)  # (B,)
        before = torch.where((first > 0)[:, None], running[(first - 1).clamp_min(0)], 0.0)  # (B, F)
        sorted_scores = (running - before).to(torch.float32)  # (B, F) in sorted order
        scores = torch.empty_like(sorted_scores)
        scores[torch.as_tensor(increments.order)] = sorted_scores
        return self.space.scatter(scores)  # (B, n_items)


class ItemKNN(_LinearItemModel):
    """Item-based nearest neighbours on cosine similarity of the binary user x item matrix."""

    def __init__(self, *, neighbours: int = 100) -> None:
        super().__init__()
        if neighbours < 1:
            raise TowersInputError(f"ItemKNN needs neighbours >= 1, got {neighbours}")
        self.neighbours = int(neighbours)

    def fit(self, user_codes: Any, *, item_codes: Any, n_users: int, n_items: int) -> ItemKNN:
        users, items = _check_codes(user_codes, item_codes, n_users=n_users, n_items=n_items)
        self.space = _ItemSpace.build(items, n_items=n_items)
        matrix = self.space.binary_matrix(users, items, dtype=torch.float32)  # (U', F)
        self.weights = truncate_neighbours(cosine_similarity(matrix), neighbours=self.neighbours)  # (F, F)
        return self


def cosine_similarity(matrix: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the columns of matrix [U, F] -> [F, F] with a zero diagonal."""
    co_counts = matrix.T @ matrix  # (F, F)
    norms = co_counts.diagonal().clamp_min(1e-12).sqrt()  # (F,)
    similarity = co_counts / norms[:, None] / norms[None, :]  # (F, F)
    similarity.fill_diagonal_(0.0)
    return similarity


def truncate_neighbours(similarity: torch.Tensor, *, neighbours: int) -> torch.Tensor:
    """Keep, in each row i of similarity [F, F], item i's ``neighbours`` most similar items; zero the rest.

    Row i then spreads history item i's score over its neighbours: scores = history [B, F] @ result [F, F].
    Items tied with the k-th neighbour share the slots left after the strictly more similar ones: each keeps its
    similarity times slots / tied, the expectation of picking them uniformly at random. Any fixed order (item
    code, position) would instead make the figures depend on how items happen to be encoded; rare items have many
    such ties (cosine 1 / sqrt(d_j) for every item j of one user).
    """
    k = min(neighbours, similarity.shape[1])
    kth = similarity.topk(k, dim=1).values[:, -1:]  # (F, 1) similarity of the k-th neighbour
    above = similarity > kth  # (F, F)
    tied = similarity == kth  # (F, F)
    slots = k - above.sum(dim=1, keepdim=True)  # (F, 1) places left for the tied items
    share = slots.to(similarity.dtype) / tied.sum(dim=1, keepdim=True).to(similarity.dtype)  # (F, 1) in (0, 1]
    return torch.where(above, similarity, torch.where(tied, similarity * share, 0.0))  # (F, F)


class EASE(_LinearItemModel):
    """Embarrassingly Shallow Autoencoder: closed-form item-item weights with a zero diagonal."""

    def __init__(self, *, l2: float = 500.0) -> None:
        super().__init__()
        if l2 <= 0:
            raise TowersInputError(f"EASE needs l2 (lambda) > 0, got {l2}")
        self.l2 = float(l2)

    def fit(self, user_codes: Any, *, item_codes: Any, n_users: int, n_items: int) -> EASE:
        users, items = _check_codes(user_codes, item_codes, n_users=n_users, n_items=n_items)
        self.space = _ItemSpace.build(items, n_items=n_items)
        matrix = self.space.binary_matrix(users, items, dtype=torch.float64)  # (U', F)
        self.weights = ease_weights(matrix, l2=self.l2).to(torch.float32)  # (F, F)
        return self


def ease_weights(matrix: torch.Tensor, *, l2: float) -> torch.Tensor:
    """EASE closed form from the user x item matrix X [U, F]: B = -P / diag(P) (column-wise), diag(B) = 0.

    P = (X^T X + l2 I)^-1 in float64. With fewer users than items (MovieLens: 600 users, 9k items) the Woodbury
    identity P = (I - X^T (l2 I_U + X X^T)^-1 X) / l2 needs a U x U solve and matrix products instead of an F x F
    inverse; otherwise P comes from a Cholesky factor of the (symmetric positive definite) F x F matrix.
    """
    matrix = matrix.to(torch.float64)
    n_users, n_items = matrix.shape
    if n_users < n_items:
        kernel = matrix @ matrix.T + l2 * torch.eye(n_users, dtype=torch.float64)  # (U, U)
        projected = torch.cholesky_solve(matrix, torch.linalg.cholesky(kernel))  # (U, F) = kernel^-1 X
        precision = -(matrix.T @ projected)  # (F, F)
        precision.diagonal().add_(1.0)
        precision /= l2
    else:
        regularised = matrix.T @ matrix + l2 * torch.eye(n_items, dtype=torch.float64)  # (F, F)
        precision = torch.cholesky_inverse(torch.linalg.cholesky(regularised))  # (F, F)
    weights = -precision / precision.diagonal()[None, :]  # (F, F)
    weights.fill_diagonal_(0.0)
    return weights


# --- harness adapters and tuning -----------------------------------------------------------------------------------


def fit_on_periods(model: HistoryModel, log: InteractionLog, *, periods: str | Sequence[str]) -> HistoryModel:
    """Fit ``model`` on the interactions of the named periods of ``log``."""
    mask = log.mask(periods)
    model.fit(log.user_codes[mask], item_codes=log.item_codes[mask], n_users=log.n_users, n_items=log.n_items)
    return model


def next_item_scorer(model: HistoryModel, *, history: InteractionHistory) -> Scorer:
    """score(query_rows) for ``evaluate_next_item``: each query scored from its history before its own time."""

    def score(query_rows: np.ndarray) -> np.ndarray:
        return model.score_increments(history.increments_for_rows(query_rows))

    return score


def cutoff_scorer(model: HistoryModel, *, history: InteractionHistory, cutoff: int) -> Scorer:
    """score(user_codes) for ``evaluate_at_cutoff``: each user scored from its history before ``cutoff``."""

    def score(user_codes: np.ndarray) -> np.ndarray:
        return model.score_histories(history.batch_at(user_codes, cutoff=cutoff))

    return score


@dataclass(frozen=True)
class TuningResult:
    best: Any  # the grid value with the highest metric (the first one on a tie)
    metric: str
    figures: dict[Any, float]  # grid value -> metric on the evaluation period


def tune(
    make_model: Callable[[Any], HistoryModel],
    *,
    grid: Iterable[Any],
    log: InteractionLog,
    history: InteractionHistory | None = None,
    fit_periods: str | Sequence[str] = "train",
    eval_period: str = "validation",
    metric: str = "recall@100",
) -> TuningResult:
    """Fit ``make_model(value)`` on ``fit_periods`` for each grid value; keep the best next-item ``metric``."""
    history = history if history is not None else InteractionHistory.build(log)
    figures: dict[Any, float] = {}
    for value in grid:
        model = fit_on_periods(make_model(value), log, periods=fit_periods)
        report = evaluate_next_item(
            log,
            next_item_scorer(model, history=history),
            fit_periods=fit_periods,
            eval_period=eval_period,
            history=history,
        )
        headline = report.headline()
        if metric not in headline:
            raise TowersInputError(f"tune: metric {metric!r} is not a headline figure; choose one of {sorted(headline)}")
        figures[value] = headline[metric]
    if not figures:
        raise TowersInputError("tune needs a non-empty grid")
    best = max(figures, key=lambda value: figures[value])
    return TuningResult(best=best, metric=metric, figures=figures)


def tune_ease(
    log: InteractionLog, *, lambdas: Sequence[float] = EASE_LAMBDAS, history: InteractionHistory | None = None
) -> TuningResult:
    """EASE's lambda over {50, 200, 500, 1000} by validation recall@100 (fit on train)."""
    return tune(lambda l2: EASE(l2=l2), grid=lambdas, log=log, history=history)
