"""The figures of one evaluation: the next-item report (headline, breakdowns, standard errors) and the cutoff report.

The protocol is written out in ``docs/evaluation.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from towers.evaluation.items import POPULARITY_BUCKETS

MIN_CATEGORY_QUERIES = 20  # a category counts towards the worst-category figure from this many queries on


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

    def worst_category_recall(self, min_queries: int = MIN_CATEGORY_QUERIES) -> float | None:
        """The lowest Recall@100 of a category with at least ``min_queries`` queries (None: no such category)."""
        recalls = [f["recall@100"] for f in self.by_category.values() if f["n_queries"] >= min_queries]
        return min(recalls) if recalls else None

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
        worst = self.worst_category_recall()
        if worst is not None:
            flat["worst_category_recall@100"] = worst
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
