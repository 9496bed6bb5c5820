"""Per-query metrics of target ranks and the standard error clustered by user.

The protocol is written out in ``docs/evaluation.md``. R@K = HR@K = 1[rank <= K]; NDCG@K = 1/log2(rank + 1) within K;
MRR = 1/rank up to MRR_DEPTH, 0 beyond.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

KS: tuple[int, ...] = (10, 50, 100)
MRR_DEPTH = 100  # MRR counts 1/rank up to this rank, 0 beyond


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


def mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")
