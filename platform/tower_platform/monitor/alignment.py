"""Category alignment of a served collection: pure figures from item vectors, their segments and test queries.

No I/O here: numpy and torch on arrays, so that every figure can be checked by hand on a tiny collection.

For each segment S (a category, a popularity bucket head / torso / tail, and the pooled "small categories"):

- item_count, interaction_share = training interactions of S's items / all training interactions;
- alignment_distance = ||C(S_major) - C(S)||_F^2, C the population covariance (1/|S|) sum (v - mean)(v - mean)^T of
  the item vectors and S_major the category with the most items (ties: the first name); relative_alignment =
  ||C(S_major) - C(S)||_F^2 / (||C(S_major)||_F^2 + ||C(S)||_F^2), bounded in [0, 1]: 0 for the same spread, 1 for a
  segment collapsed to one point or spread in directions orthogonal to the major category's (derivation and
  sampling noise: :mod:`tower_platform.monitor.covariance`);
- mean_norm = mean ||v|| (1.0 when the vectors are L2-normalised), centroid_norm = ||mean v|| (1.0: all the same
  direction);
- recall / ndcg = Recall@K and NDCG@K (1/log2(rank + 1) within K) of the test queries whose target is in S;
- coverage = share of S's items that appear in at least one test query's top-K.

Pooling: the categories with fewer than ``min_items`` items or fewer than ``min_queries`` test queries are flagged
``pooled`` (their own figures are kept) and also measured together as one segment of kind ``pooled`` named
``small categories``: its items are the union of theirs and its queries those whose target is among them. A
comparison passes the candidate's pooled categories on (``pooled=``) so that both versions pool the same ones.

Top-K is exact over every item (:mod:`tower_platform.monitor.exact_top_k`). Each query's history items are excluded
from its ranking (as the serving path and the evaluation protocol do).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from collections.abc import Collection

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.monitor.covariance import SegmentSpread, covariance_of, segment_spread
from tower_platform.monitor.exact_top_k import ITEM_CHUNK, QUERY_CHUNK, target_ranks, top_k_items
from tower_platform.registry.entities import AlignmentSegment

CATEGORY = "category"
POPULARITY = "popularity"
POOLED = "pooled"
POOLED_SEGMENT = "small categories"
POPULARITY_BUCKETS: tuple[str, ...] = ("head", "torso", "tail")
UNKNOWN_SEGMENT = "(none)"


@dataclass(frozen=True, eq=False)
class ServedItems:
    """The items of a collection as served: one row per point."""

    ids: np.ndarray  # (N,) item ids (str)
    vectors: np.ndarray  # (N, D) float32
    categories: np.ndarray  # (N,) category names (str)
    popularity: np.ndarray  # (N,) "head" | "torso" | "tail"
    interaction_counts: np.ndarray  # (N,) training interactions per item

    def __post_init__(self) -> None:
        n = self.vectors.shape[0]
        if self.vectors.ndim != 2 or any(len(a) != n for a in (self.ids, self.categories, self.popularity,
                                                               self.interaction_counts)):
            raise ValueError(
                f"ServedItems needs one id, category, popularity bucket and count per vector row; got {len(self.ids)}"
                f" ids, {len(self.categories)} categories, {len(self.popularity)} buckets, "
                f"{len(self.interaction_counts)} counts for vectors of shape {self.vectors.shape}"
            )

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


@dataclass(frozen=True, eq=False)
class QuerySet:
    """Test queries in item index space: a vector, a target row of :class:`ServedItems` and history rows to exclude."""

    vectors: np.ndarray  # (Q, D) float32
    targets: np.ndarray  # (Q,) int64 item rows
    history_indptr: np.ndarray  # (Q + 1,) query q excludes history_indices[indptr[q]:indptr[q + 1]]
    history_indices: np.ndarray  # (nnz,) int64 item rows
    n_skipped: int = 0  # test interactions left out (target not served, or already in the history)

    @classmethod
    def without_history(cls, vectors: np.ndarray, targets: np.ndarray) -> QuerySet:
        q = len(targets)
        return cls(np.asarray(vectors, dtype=np.float32), np.asarray(targets, dtype=np.int64),
                   np.zeros(q + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.targets.shape[0])


@dataclass(frozen=True)
class AlignmentFigures:
    k: int
    major_category: str | None
    n_items: int
    n_queries: int
    n_skipped: int
    segments: tuple[AlignmentSegment, ...]


# --- the report ----------------------------------------------------------------------------------------------------


def encode_segments(values: object, *, order: tuple[str, ...] = ()) -> tuple[tuple[str, ...], np.ndarray]:
    """Segment names and (N,) int64 codes of each value; missing or empty values become ``(none)``.

    Names listed in ``order`` come first in that order (when present), the others sorted by name.
    """
    labels = pa.array(values, type=pa.string()) if not isinstance(values, pa.Array) else values.cast(pa.string())
    missing = pc.or_kleene(pc.is_null(labels), pc.equal(labels, ""))
    labels = pc.if_else(pc.fill_null(missing, True), UNKNOWN_SEGMENT, labels)
    present = set(pc.unique(labels).to_pylist())
    names = tuple([n for n in order if n in present] + sorted(present - set(order)))
    codes = pc.index_in(labels, value_set=pa.array(names, type=pa.string()))
    return names, codes.to_numpy(zero_copy_only=False).astype(np.int64)


def _mean_or_none(total: np.ndarray, count: np.ndarray) -> list[float | None]:
    return [float(t / c) if c > 0 else None for t, c in zip(total.tolist(), count.tolist(), strict=True)]


@dataclass(frozen=True, eq=False)
class _QueryOutcome:
    """What the segments need from the top-K pass."""

    target_items: np.ndarray  # (Q,) item rows
    hit: np.ndarray  # (Q,) 1.0 when the target is in the top-K
    gain: np.ndarray  # (Q,) 1 / log2(rank + 1) within K, else 0
    covered: np.ndarray  # (N,) 1.0 when the item is in some query's top-K


def _segments(
    kind: str,
    names: tuple[str, ...],
    codes: np.ndarray,
    *,
    spread: SegmentSpread,
    norms: np.ndarray,
    counts: np.ndarray,
    outcome: _QueryOutcome,
) -> list[AlignmentSegment]:
    s = len(names)
    size = np.bincount(codes, minlength=s)  # (S,)
    per_item = np.maximum(size, 1)  # (S,) no division by zero for an empty segment
    centroid = np.linalg.norm(spread.means, axis=1)  # (S,)
    target_codes = codes[outcome.target_items]  # (Q,)
    n_queries = np.bincount(target_codes, minlength=s)  # (S,)
    recall = _mean_or_none(np.bincount(target_codes, weights=outcome.hit, minlength=s), n_queries)
    ndcg = _mean_or_none(np.bincount(target_codes, weights=outcome.gain, minlength=s), n_queries)
    mean_norm = np.bincount(codes, weights=norms, minlength=s) / per_item
    coverage = np.bincount(codes, weights=outcome.covered, minlength=s) / per_item
    total = counts.sum()
    share = np.bincount(codes, weights=counts, minlength=s) / total if total > 0 else np.zeros(s)
    return [
        AlignmentSegment(
            kind=kind,
            segment=name,
            item_count=int(size[c]),
            interaction_share=float(share[c]),
            alignment_distance=float(spread.alignment_distance[c]),
            relative_alignment=float(spread.relative_alignment[c]),
            mean_norm=float(mean_norm[c]),
            centroid_norm=float(centroid[c]),
            n_queries=int(n_queries[c]),
            recall=recall[c],
            ndcg=ndcg[c],
            coverage=float(coverage[c]),
        )
        for c, name in enumerate(names)
    ]


def pooled_categories(segments: Collection[AlignmentSegment], *, min_items: int, min_queries: int) -> frozenset[str]:
    """The categories below either minimum: they are judged together as the ``small categories`` segment."""
    return frozenset(s.segment for s in segments
                     if s.kind == CATEGORY and (s.item_count < min_items or s.n_queries < min_queries))


def alignment_figures(
    items: ServedItems,
    queries: QuerySet,
    *,
    k: int,
    min_items: int = 0,
    min_queries: int = 0,
    pooled: Collection[str] | None = None,
    query_chunk: int = QUERY_CHUNK,
    item_chunk: int = ITEM_CHUNK,
    screen: str | None = None,
) -> AlignmentFigures:
    """Every figure of every category, popularity bucket and the pooled small categories (see the module docstring).

    ``pooled``: the category names to pool (a comparison passes the candidate's); default: those with fewer than
    ``min_items`` items or ``min_queries`` test queries here.
    """
    vectors = np.ascontiguousarray(items.vectors, dtype=np.float32)  # (N, D)
    n = len(items)
    top = top_k_items(queries, vectors, k=k, query_chunk=query_chunk, item_chunk=item_chunk, screen=screen)  # (Q, K)
    ranks = target_ranks(top, queries.targets)  # (Q,)
    covered = np.zeros(n, dtype=np.float64)  # (N,)
    covered[top[top >= 0]] = 1.0
    outcome = _QueryOutcome(
        target_items=np.asarray(queries.targets, dtype=np.int64),
        hit=(ranks > 0).astype(np.float64),
        gain=np.where(ranks > 0, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0),
        covered=covered,
    )
    common = {
        "norms": np.sqrt(np.einsum("ij,ij->i", vectors, vectors).astype(np.float64)),  # (N,) no float64 copy of (N, D)
        "counts": np.asarray(items.interaction_counts, dtype=np.float64),  # (N,)
        "outcome": outcome,
    }
    category_names, category_codes = encode_segments(items.categories)
    sizes = np.bincount(category_codes, minlength=len(category_names))
    major = int(np.lexsort((np.arange(len(category_names)), -sizes))[0]) if n else None
    major_cov = (covariance_of(vectors, np.flatnonzero(category_codes == major))[1] if major is not None
                 else np.zeros((vectors.shape[1],) * 2))

    def spread(codes: np.ndarray, count: int, only: np.ndarray | None = None) -> SegmentSpread:
        return segment_spread(vectors, codes, n_segments=count, reference=major_cov, segments=only)

    categories = _segments(CATEGORY, category_names, category_codes,
                           spread=spread(category_codes, len(category_names)), **common)
    if pooled is None:
        pooled = pooled_categories(categories, min_items=min_items, min_queries=min_queries)
    pooled = frozenset(pooled)
    categories = [replace(c, pooled=c.segment in pooled) for c in categories]
    bucket_names, bucket_codes = encode_segments(items.popularity, order=POPULARITY_BUCKETS)
    segments = categories + _segments(POPULARITY, bucket_names, bucket_codes,
                                      spread=spread(bucket_codes, len(bucket_names)), **common)
    in_pool = np.isin(np.asarray(category_names, dtype=object), list(pooled))  # (C,)
    if in_pool.any():  # one segment of every pooled category's items and queries
        pool_codes = np.where(in_pool[category_codes], 0, 1)  # (N,) 0 = pooled
        segments += _segments(POOLED, (POOLED_SEGMENT, ""), pool_codes,
                              spread=spread(pool_codes, 2, only=np.array([0])), **common)[:1]
    return AlignmentFigures(
        k=int(k),
        major_category=category_names[major] if major is not None else None,
        n_items=n,
        n_queries=len(queries),
        n_skipped=int(queries.n_skipped),
        segments=tuple(segments),
    )
