"""Classical baselines scored from the same histories as the towers: MostPopular, ItemKNN and EASE.

Each model has ``fit(user_codes, *, item_codes, n_users, n_items, times_s=None)`` on the fit interactions (every
interaction is an implicit positive; ``times_s`` their times in seconds, for models that look at time) and
``score_histories(batch) -> float32 [B, n_items]`` for a ``HistoryBatch`` of distinct history items.
``next_item_scorer`` / ``cutoff_scorer`` turn a fitted model into the callbacks of ``towers/evaluation/next_item.py``,
and ``tune`` picks a hyper-parameter on the validation period (model fit on train), as ``docs/evaluation.md``
prescribes.

    MostPopular  score_j = fit count of j (the same list for every query); with ``window_days`` W: the fit
                 interactions of j in the last W days of the fit data (ties, e.g. items absent from the window, go
                 by overall fit popularity in the harness)
    ItemKNN      (item_knn.py) cosine similarity of the item columns of the binary user x item matrix, top
                 ``neighbours`` per item from a blocked sparse product; score = history @ S
    EASE         (ease.py) closed form over the ``max_items`` most interacted items; score = history @ B

Memory grows with the fit data and the kept neighbours, plus EASE's F^2 over its covered items; never users x items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from towers.errors import TowersInputError
from towers.evaluation.ease import EASE, EASE_LAMBDAS, EASE_MAX_ITEMS
from towers.evaluation.history import HistoryBatch, InteractionHistory, PrefixIncrements
from towers.evaluation.item_knn import ItemKNN
from towers.evaluation.item_space import check_fit_codes
from towers.evaluation.next_item import evaluate_next_item
from towers.evaluation.ranking import Scorer
from towers.evaluation.split import InteractionLog

__all__ = [
    "EASE",
    "EASE_LAMBDAS",
    "EASE_MAX_ITEMS",
    "RECENT_WINDOWS_DAYS",
    "HistoryModel",
    "ItemKNN",
    "MostPopular",
    "TuningResult",
    "classical_baselines",
    "cutoff_scorer",
    "fit_on_periods",
    "next_item_scorer",
    "tune",
    "tune_ease",
]

SECONDS_PER_DAY = 86_400.0
RECENT_WINDOWS_DAYS: tuple[float, ...] = (7.0, 30.0)


class HistoryModel(Protocol):
    def fit(
        self, user_codes: np.ndarray, *, item_codes: np.ndarray, n_users: int, n_items: int, times_s: Any = None
    ) -> Any: ...

    def score_histories(self, batch: HistoryBatch) -> np.ndarray:
        """float32 [B, n_items] for B histories."""
        ...

    def score_increments(self, increments: PrefixIncrements) -> np.ndarray:
        """float32 [B, n_items] for the B histories of ``increments`` (in their original order)."""
        ...


class MostPopular:
    """score_j = number of fit interactions of item j, whatever the history; optionally over a recent window.

    With ``window_days`` W only the fit interactions in (t_last - W days, t_last] count, t_last the latest fit
    interaction. The fit data end where the evaluation period begins, so this is what was trending just before the
    cutoff. It is not the W days before each query: those would include other users' interactions of the evaluation
    period, which no model fit on the fit periods sees (the towers' item features are read as of the cutoff too).
    """

    def __init__(self, *, window_days: float | None = None) -> None:
        if window_days is not None and not window_days > 0:
            raise TowersInputError(f"MostPopular needs window_days > 0 (or None for every fit interaction), got {window_days}")
        self.window_days = window_days
        self.counts: np.ndarray | None = None  # (n_items,) float32

    def fit(
        self, user_codes: Any, *, item_codes: Any, n_users: int, n_items: int, times_s: Any = None
    ) -> MostPopular:
        _, items = check_fit_codes(user_codes, item_codes, n_users=n_users, n_items=n_items)
        if self.window_days is not None:
            if times_s is None:
                raise TowersInputError("MostPopular with window_days needs the fit interactions' times_s")
            times = np.asarray(times_s, dtype=np.float64)
            if times.shape != items.shape:
                raise TowersInputError(f"times_s has shape {times.shape}, the fit codes {items.shape}; give one per interaction")
            items = items[times > times.max() - self.window_days * SECONDS_PER_DAY]
        self.counts = np.bincount(items, minlength=n_items).astype(np.float32)
        return self

    def score_histories(self, batch: HistoryBatch) -> np.ndarray:
        if self.counts is None:
            raise TowersInputError("MostPopular is not fitted; call fit() first")
        return np.broadcast_to(self.counts, (batch.n_rows, self.counts.size)).copy()  # (B, n_items)

    def score_increments(self, increments: PrefixIncrements) -> np.ndarray:
        return self.score_histories(increments.increments)


def classical_baselines(
    *,
    ease_l2: float = 500.0,
    ease_max_items: int | None = EASE_MAX_ITEMS,
    ease_min_count: int = 1,
    recent_days: Sequence[float] = RECENT_WINDOWS_DAYS,
    neighbours: int = 100,
) -> dict[str, HistoryModel]:
    """The baselines every report shows, by display name: MostPopular (all time and each recent window), ItemKNN,
    EASE."""
    models: dict[str, HistoryModel] = {"MostPopular": MostPopular()}
    for days in recent_days:
        models[f"MostPopular (last {days:g} days)"] = MostPopular(window_days=days)
    models["ItemKNN"] = ItemKNN(neighbours=neighbours)
    models[f"EASE (l2 {ease_l2:g})"] = EASE(l2=ease_l2, max_items=ease_max_items, min_count=ease_min_count)
    return models


# --- harness adapters and tuning -----------------------------------------------------------------------------------


def fit_on_periods(model: HistoryModel, log: InteractionLog, *, periods: str | Sequence[str]) -> HistoryModel:
    """Fit ``model`` on the interactions of the named periods of ``log``."""
    mask = log.mask(periods)
    model.fit(log.user_codes[mask], item_codes=log.item_codes[mask], n_users=log.n_users, n_items=log.n_items,
              times_s=log.timestamps[mask] / log.ticks_per_second)
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
