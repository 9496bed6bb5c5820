"""The HNSW index of the embedded vector store: its settings, and the recall check that guards them.

Graph search trades recall for speed, and how much depends on the vectors: on loose clusters in 64 dimensions a
graph built with m=16 finds little more than half of the exact top-100 at ef=128. So the settings are measured, not
assumed: :func:`measure_recall` searches sampled stored vectors both ways and :func:`check_recall` refuses a
collection whose recall@K is below the floor, naming the figure and the settings to raise::

    recall = check_recall(store, "movies__v3")      # RecallBelowFloorError below EdgeIndexConfig.recall_floor
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tower_platform.errors import ConflictError
from tower_platform.settings import env_name

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.vectors.edge import EdgeVectorStore


@dataclass(frozen=True)
class EdgeIndexConfig:
    """When and how a collection gets an HNSW graph, and how it is searched.

    The defaults hold recall@100 >= 0.95 against exact search on clustered 64-d vectors at 200k points with a top-100
    p50 under 5 ms on two cores (``ops/bench/vector_scale.py``). Raising ``ef`` costs search time only; ``m`` and
    ``ef_construct`` take effect for collections created afterwards and cost build time.
    """

    exact_below: int = 20_000  # points; smaller collections are searched exactly and get no graph
    m: int = 32  # edges per node of the graph
    ef_construct: int = 200  # candidates while building
    ef: int = 256  # candidates while searching
    recall_floor: float = 0.95  # check_recall refuses a collection below this recall@K
    recall_queries: int = 200  # sampled stored vectors per recall measurement
    recall_k: int = 100  # K of the recall check (the top-K that serving and the evaluation ask for)

    def __post_init__(self) -> None:
        if self.exact_below < 0 or self.m < 4 or self.ef_construct < 4 or self.ef < 1:
            raise ConflictError(
                f"vector index settings exact_below={self.exact_below}, m={self.m}, ef_construct={self.ef_construct}, "
                f"ef={self.ef} are out of range: exact_below >= 0, m >= 4, ef_construct >= 4, ef >= 1."
            )
        if self.recall_queries < 1 or self.recall_k < 1:
            raise ConflictError(
                f"recall_queries={self.recall_queries} and recall_k={self.recall_k} must both be at least 1."
            )
        if not 0.0 <= self.recall_floor <= 1.0:
            raise ConflictError(f"recall_floor={self.recall_floor} must lie between 0 and 1.")


class RecallBelowFloorError(ConflictError):
    """Graph search of a collection misses too many of the exact top-K."""


def measure_recall(store: EdgeVectorStore, name: str, *, queries: int | None = None, k: int = 100, seed: int = 0) -> float:
    """Mean share of the exact top-``k`` that graph search returns, over stored vectors sampled at random.

    Below ``exact_below`` points the collection has no graph (plain segments are scanned), so the figure is 1.0.
    """
    if store.collection_info(name).point_count == 0:
        return 1.0
    sampled = store.sample_vectors(name, queries or store.index.recall_queries, seed=seed)  # [Q, D]
    exact = store.search_many(name, sampled, limit=k, exact=True)
    approximate = store.search_many(name, sampled, limit=k, exact=False)
    overlaps = [
        len({h.item_id for h in a} & {h.item_id for h in e}) / max(1, len(e))
        for a, e in zip(approximate, exact, strict=True)
    ]
    return float(np.mean(overlaps))


def check_recall(
    store: EdgeVectorStore, name: str, *, floor: float | None = None, queries: int | None = None, k: int | None = None
) -> float:
    """The measured recall@``k``, or RecallBelowFloorError naming the figure and the settings to raise."""
    floor = store.index.recall_floor if floor is None else floor
    k = store.index.recall_k if k is None else k
    recall = measure_recall(store, name, queries=queries, k=k)
    if recall < floor:
        m, ef_construct = store.graph_settings(name)
        raise RecallBelowFloorError(
            f"vector collection '{name}' finds {recall:.3f} of the exact top-{k} (recall@{k}), below the floor "
            f"{floor:.2f}, at ef={store.index.ef}, m={m}, ef_construct={ef_construct}; raise ef first "
            f"({env_name('edge', 'ef')}, search only, then `towerctl embeddings verify`), then m or ef_construct "
            f"({env_name('edge', 'm')}, {env_name('edge', 'ef_construct')}) and write the version again with "
            "`towerctl embeddings write MODEL --version N --rebuild`."
        )
    return recall


def check_index(store: EdgeVectorStore, name: str) -> float:
    """What verification asks of a written collection's index: a graph when it holds ``exact_below`` points or more
    (ConflictError when none was built), and recall@K at or above the floor (:func:`check_recall`)."""
    count = store.collection_info(name).point_count
    if count >= store.index.exact_below and count > 0 and store.indexed_count(name) == 0:
        raise ConflictError(
            f"vector collection '{name}' holds {count:,} points (>= exact_below={store.index.exact_below:,}) but no "
            "HNSW graph; rerun `towerctl embeddings write` for its version (it resumes, then builds the graph)."
        )
    return check_recall(store, name)
