"""Category alignment of a served collection: pure figures from item vectors, their segments and test queries.

No I/O here: numpy and torch on arrays, so that every figure can be checked by hand on a tiny collection.

For each segment S (a category, or a popularity bucket head / torso / tail):

- item_count, interaction_share = training interactions of S's items / all training interactions;
- alignment_distance = ||C(S_major) - C(S)||_F^2, C the population covariance (1/|S|) sum (v - mean)(v - mean)^T of
  the item vectors and S_major the category with the most items (ties: the first name); relative_alignment divides
  it by ||C(S_major)||_F^2, so that a segment collapsed to one point scores exactly 1.0;
- mean_norm = mean ||v|| (1.0 when the vectors are L2-normalised), centroid_norm = ||mean v|| (1.0: all the same
  direction);
- recall / ndcg = Recall@K and NDCG@K (1/log2(rank + 1) within K) of the test queries whose target is in S;
- coverage = share of S's items that appear in at least one test query's top-K.

Top-K is exact over every item: queries are scored ``query_chunk`` at a time against ``item_chunk`` items at a time,
keeping a running top-K, so memory is bounded by query_chunk x item_chunk scores whatever the sizes. Each query's
history items are excluded from its ranking (as the serving path and the evaluation protocol do).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from tower_platform.registry.entities import AlignmentSegment

CATEGORY = "category"
POPULARITY = "popularity"
POPULARITY_BUCKETS: tuple[str, ...] = ("head", "torso", "tail")
UNKNOWN_SEGMENT = "(none)"
QUERY_CHUNK = 256
ITEM_CHUNK = 65_536


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


# --- top-K ---------------------------------------------------------------------------------------------------------


def top_k_items(
    queries: QuerySet,
    item_vectors: np.ndarray,
    *,
    k: int,
    query_chunk: int = QUERY_CHUNK,
    item_chunk: int = ITEM_CHUNK,
) -> np.ndarray:
    """(Q, K) item rows of each query's exact top-K by dot product, best first; -1 pads rows with fewer candidates.

    Memory: one (query_chunk, item_chunk) score block plus a (query_chunk, 2K) running top-K at a time.
    """
    items = torch.from_numpy(np.ascontiguousarray(item_vectors, dtype=np.float32))  # (N, D)
    n_items = items.shape[0]
    k = int(min(k, n_items))
    top = np.full((len(queries), k), -1, dtype=np.int64)  # (Q, K)
    if k == 0 or len(queries) == 0:
        return top
    indptr = queries.history_indptr
    for q0 in range(0, len(queries), query_chunk):
        q1 = min(q0 + query_chunk, len(queries))
        block = torch.from_numpy(np.ascontiguousarray(queries.vectors[q0:q1], dtype=np.float32))  # (B, D)
        lengths = np.diff(indptr[q0 : q1 + 1])
        hist_rows = np.repeat(np.arange(q1 - q0), lengths)  # (h,) local query row of each history item
        hist_items = queries.history_indices[indptr[q0] : indptr[q1]]  # (h,)
        best_scores = torch.full((q1 - q0, k), -torch.inf)  # (B, K)
        best_items = torch.full((q1 - q0, k), -1, dtype=torch.int64)  # (B, K)
        for i0 in range(0, n_items, item_chunk):
            i1 = min(i0 + item_chunk, n_items)
            scores = block @ items[i0:i1].T  # (B, I)
            inside = (hist_items >= i0) & (hist_items < i1)
            scores[torch.from_numpy(hist_rows[inside]), torch.from_numpy(hist_items[inside] - i0)] = -torch.inf
            chunk_scores, chunk_items = torch.topk(scores, min(k, i1 - i0), dim=1)  # (B, k')
            merged_scores = torch.cat([best_scores, chunk_scores], dim=1)  # (B, K + k')
            merged_items = torch.cat([best_items, chunk_items + i0], dim=1)  # (B, K + k')
            best_scores, position = torch.topk(merged_scores, k, dim=1)  # (B, K)
            best_items = merged_items.gather(1, position)  # (B, K)
        best_items[torch.isinf(best_scores)] = -1  # excluded or missing candidates
        top[q0:q1] = best_items.numpy()
    return top


def target_ranks(top: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(Q,) 1-based rank of each target within its top-K row; 0 when it is not in the top-K."""
    hit = top == np.asarray(targets)[:, None]  # (Q, K)
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0).astype(np.int64)


# --- covariance ----------------------------------------------------------------------------------------------------


def segment_moments(
    vectors: np.ndarray, codes: np.ndarray, *, n_segments: int, row_chunk: int = ITEM_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (S, D) and population covariance (S, D, D), float64, of each segment's vectors (zeros when empty).

    Accumulated over ``row_chunk`` rows at a time, shifted by the segment's first vector (so that a segment of
    identical vectors gets exactly zero covariance): C = (sum (x - s)(x - s)^T - n (m - s)(m - s)^T) / n.
    """
    d = vectors.shape[1]
    means = np.zeros((n_segments, d), dtype=np.float64)
    covariances = np.zeros((n_segments, d, d), dtype=np.float64)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_segments + 1))
    for s in range(n_segments):  # one matrix product per segment and chunk, never a loop over items
        rows = order[bounds[s] : bounds[s + 1]]
        if rows.size == 0:
            continue
        shift = vectors[rows[0]].astype(np.float64)  # (D,)
        total = np.zeros(d, dtype=np.float64)  # (D,) sum of x - shift
        outer = np.zeros((d, d), dtype=np.float64)  # (D, D) sum of (x - shift)(x - shift)^T
        for begin in range(0, rows.size, row_chunk):
            x = vectors[rows[begin : begin + row_chunk]].astype(np.float64) - shift  # (c, D)
            total += x.sum(axis=0)
            outer += x.T @ x
        centred_mean = total / rows.size  # (D,)
        means[s] = shift + centred_mean
        covariances[s] = outer / rows.size - np.outer(centred_mean, centred_mean)
    return means, covariances


def _squared_frobenius(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(S,) ||a - b[s]||_F^2 for a (D, D) and b (S, D, D)."""
    diff = b - a[None]  # (S, D, D)
    return np.einsum("sij,sij->s", diff, diff)


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
    moments: tuple[np.ndarray, np.ndarray],
    major_cov: np.ndarray,
    norms: np.ndarray,
    counts: np.ndarray,
    outcome: _QueryOutcome,
) -> list[AlignmentSegment]:
    s = len(names)
    size = np.bincount(codes, minlength=s)  # (S,)
    per_item = np.maximum(size, 1)  # (S,) no division by zero for an empty segment
    means, covariances = moments  # (S, D), (S, D, D)
    distance = _squared_frobenius(major_cov, covariances)  # (S,)
    major_size = float(np.einsum("ij,ij->", major_cov, major_cov))
    centroid = np.linalg.norm(means, axis=1)  # (S,)
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
            alignment_distance=float(distance[c]),
            relative_alignment=float(distance[c] / major_size) if major_size > 0 else None,
            mean_norm=float(mean_norm[c]),
            centroid_norm=float(centroid[c]),
            n_queries=int(n_queries[c]),
            recall=recall[c],
            ndcg=ndcg[c],
            coverage=float(coverage[c]),
        )
        for c, name in enumerate(names)
    ]


def alignment_figures(
    items: ServedItems,
    queries: QuerySet,
    *,
    k: int,
    query_chunk: int = QUERY_CHUNK,
    item_chunk: int = ITEM_CHUNK,
) -> AlignmentFigures:
    """Every figure of every category and popularity bucket (see the module docstring)."""
    vectors = np.ascontiguousarray(items.vectors, dtype=np.float32)  # (N, D)
    n = len(items)
    top = top_k_items(queries, vectors, k=k, query_chunk=query_chunk, item_chunk=item_chunk)  # (Q, K)
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
    category_moments = segment_moments(vectors, category_codes, n_segments=len(category_names))
    sizes = np.bincount(category_codes, minlength=len(category_names))
    major = int(np.lexsort((np.arange(len(category_names)), -sizes))[0]) if n else None
    major_cov = category_moments[1][major] if major is not None else np.zeros((vectors.shape[1],) * 2)
    segments = _segments(CATEGORY, category_names, category_codes, moments=category_moments, major_cov=major_cov,
                         **common)
    bucket_names, bucket_codes = encode_segments(items.popularity, order=POPULARITY_BUCKETS)
    bucket_moments = segment_moments(vectors, bucket_codes, n_segments=len(bucket_names))
    segments += _segments(POPULARITY, bucket_names, bucket_codes, moments=bucket_moments, major_cov=major_cov,
                          **common)
    return AlignmentFigures(
        k=int(k),
        major_category=category_names[major] if major is not None else None,
        n_items=n,
        n_queries=len(queries),
        n_skipped=int(queries.n_skipped),
        segments=tuple(segments),
    )
