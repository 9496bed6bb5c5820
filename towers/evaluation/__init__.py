"""Full-corpus evaluation on a time split (the protocol: ``docs/evaluation.md``) and the classical baselines.

    split        InteractionLog, TimeSplit, PERIODS           history   InteractionHistory, HistoryBatch
    items        FitItems, CategoryIndex, popularity buckets  ranking   rank_targets, Scorer
    metrics      next_item_metrics, clustered_standard_error  report    EvaluationReport, CutoffReport
    next_item    evaluate_next_item (primary)                 cutoff    evaluate_at_cutoff (secondary)
    protocol     EvaluationData (an Arrow training set)       baseline  MostPopular, classical_baselines, tune
    item_knn     ItemKNN (blocked sparse top-k neighbours)    ease      EASE (over the most interacted items)
"""

from towers.evaluation.baseline import (
    EASE,
    EASE_LAMBDAS,
    EASE_MAX_ITEMS,
    RECENT_WINDOWS_DAYS,
    HistoryModel,
    ItemKNN,
    MostPopular,
    classical_baselines,
    cutoff_scorer,
    fit_on_periods,
    next_item_scorer,
)
from towers.evaluation.cutoff import evaluate_at_cutoff
from towers.evaluation.history import HistoryBatch, InteractionHistory, PrefixIncrements
from towers.evaluation.items import HEAD_SHARE, POPULARITY_BUCKETS, TAIL_MAX_COUNT, CategoryIndex, FitItems
from towers.evaluation.metrics import KS, MRR_DEPTH, clustered_standard_error, next_item_metrics
from towers.evaluation.next_item import NextItemQueries, evaluate_next_item, next_item_ranks, validation_recall
from towers.evaluation.protocol import EvaluationData
from towers.evaluation.ranking import Scorer, rank_targets
from towers.evaluation.report import CutoffReport, EvaluationReport
from towers.evaluation.split import PERIODS, InteractionLog, TimeSplit, as_int64_time, epoch_micros

__all__ = [
    "EASE",
    "EASE_LAMBDAS",
    "EASE_MAX_ITEMS",
    "HEAD_SHARE",
    "KS",
    "MRR_DEPTH",
    "PERIODS",
    "POPULARITY_BUCKETS",
    "RECENT_WINDOWS_DAYS",
    "TAIL_MAX_COUNT",
    "CategoryIndex",
    "CutoffReport",
    "EvaluationData",
    "EvaluationReport",
    "FitItems",
    "HistoryBatch",
    "HistoryModel",
    "InteractionHistory",
    "InteractionLog",
    "ItemKNN",
    "MostPopular",
    "NextItemQueries",
    "PrefixIncrements",
    "Scorer",
    "TimeSplit",
    "as_int64_time",
    "epoch_micros",
    "classical_baselines",
    "clustered_standard_error",
    "cutoff_scorer",
    "evaluate_at_cutoff",
    "evaluate_next_item",
    "fit_on_periods",
    "next_item_metrics",
    "next_item_ranks",
    "next_item_scorer",
    "rank_targets",
    "validation_recall",
]
