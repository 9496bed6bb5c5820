"""A synthetic retail-sized catalogue for the monitor: 1,600 categories of long-tailed sizes, as arrays.

Items: every category c has a centroid direction m_c; its item vectors are normalise(m_c + s_c S z), z standard
normal, S one within-category shape shared by all categories (decaying spread over the dimensions: what a model
trained with the Category Alignment Loss aims for) and s_c a log-normal scale (categories differ in how widely their
items spread). Category sizes follow a Pareto law (most categories have a handful
of items, a few have hundreds). Test queries: a target category drawn in proportion to its size times a log-normal demand, a target item
uniform in it, the query vector normalise(target + NOISE u), u standard normal; each query has up to 3 history
items of the same category (excluded from its ranking). Training interaction counts are Zipf-distributed.

``retrained`` draws new within-category offsets around the same centroids and moves the queries with their targets
(another healthy training run of both towers); ``collapse`` puts every item of the given categories on one point
(its normalised centroid) and leaves the queries alone (a broken item tower).

Seeded, vectorised: the real monitor code (exact top-K, covariances, pooling, gates) runs on it in seconds, no
training needed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tower_platform.monitor.alignment import QuerySet, ServedItems
from tower_platform.vectors.writer import popularity_buckets

N_CATEGORIES = 1_600
DIMENSION = 32
N_QUERIES = 4_000
NOISE = 0.35  # query noise
SPREAD = 0.5  # within-category spread scale


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Catalogue:
    items: ServedItems
    queries: QuerySet
    centroids: np.ndarray  # (C, D)
    names: np.ndarray  # (C,) category names
    codes: np.ndarray  # (N,) category of each item
    shape: np.ndarray  # (D, D) the shared within-category shape S
    scale: np.ndarray  # (C,) s_c
    query_noise: np.ndarray  # (Q, D) u

    def sizes(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=len(self.names))

    def queries_per_category(self) -> np.ndarray:
        return np.bincount(self.codes[self.queries.targets], minlength=len(self.names))

    def with_vectors(self, vectors: np.ndarray) -> Catalogue:
        items = ServedItems(self.items.ids, vectors.astype(np.float32), self.items.categories, self.items.popularity,
                            self.items.interaction_counts)
        return replace(self, items=items)

    def retrained(self, seed: int) -> Catalogue:
        rng = np.random.default_rng(seed)
        offsets = self.scale[self.codes, None] * (rng.standard_normal((len(self.codes), DIMENSION)) @ self.shape)
        moved = self.with_vectors(_unit(self.centroids[self.codes] + offsets))
        q = self.queries  # the query tower is retrained too: the same users, near their targets' new vectors
        vectors = _unit(moved.items.vectors[q.targets] + NOISE * self.query_noise)
        return replace(moved, queries=QuerySet(vectors, q.targets, q.history_indptr, q.history_indices))

    def collapse(self, categories: list[str]) -> Catalogue:
        vectors = self.items.vectors.copy()
        for name in categories:
            c = int(np.flatnonzero(self.names == name)[0])
            vectors[self.codes == c] = _unit(self.centroids[c : c + 1])[0]
        return self.with_vectors(vectors)


def build_catalogue(*, seed: int = 0, n_categories: int = N_CATEGORIES, n_queries: int = N_QUERIES) -> Catalogue:
    rng = np.random.default_rng(seed)
    sizes = np.minimum(1 + (rng.pareto(1.2, n_categories) * 3).astype(np.int64), 1_200)  # (C,) long-tailed
    codes = np.repeat(np.arange(n_categories), sizes)  # (N,)
    n = codes.size
    centroids = rng.standard_normal((n_categories, DIMENSION))  # (C, D)
    shape = np.diag(SPREAD * 0.85 ** np.arange(DIMENSION)) @ np.linalg.qr(
        rng.standard_normal((DIMENSION, DIMENSION)))[0] * np.sqrt(DIMENSION) / np.sqrt(
        np.sum((0.85 ** np.arange(DIMENSION)) ** 2))  # (D, D) decaying spread, one rotation
    scale = rng.lognormal(0.0, 0.5, n_categories)  # (C,) categories differ in how widely their items spread
    vectors = _unit(centroids[codes] + scale[codes, None] * (rng.standard_normal((n, DIMENSION)) @ shape))  # (N, D)
    names = np.asarray([f"sub class {c:04d}" for c in range(n_categories)], dtype=object)
    counts = rng.zipf(1.7, size=n).astype(np.int64)
    items = ServedItems(np.asarray([f"art {i:06d}" for i in range(n)]), vectors, names[codes],
                        popularity_buckets(counts), counts)
    demand = sizes * rng.lognormal(0.0, 1.5, n_categories)  # (C,) demand is not size: some big categories sell little
    target_category = rng.choice(n_categories, size=n_queries, p=demand / demand.sum())  # (Q,)
    starts = np.concatenate([[0], np.cumsum(sizes)])[:-1]  # (C,) first item of each category
    targets = starts[target_category] + (rng.random(n_queries) * sizes[target_category]).astype(np.int64)  # (Q,)
    query_noise = rng.standard_normal((n_queries, DIMENSION))  # (Q, D)
    query_vectors = _unit(vectors[targets] + NOISE * query_noise)
    lengths = np.minimum(rng.integers(0, 4, size=n_queries), sizes[target_category] - 1)  # (Q,) history sizes
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    owner = np.repeat(np.arange(n_queries), lengths)
    offset = (targets[owner] - starts[target_category[owner]] + 1 + np.arange(indptr[-1]) - indptr[owner])
    history = starts[target_category[owner]] + offset % sizes[target_category[owner]]  # distinct, never the target
    queries = QuerySet(query_vectors, targets, indptr, history.astype(np.int64))
    return Catalogue(items, queries, centroids, names, codes, shape, scale, query_noise)


def monitor_table(catalogue: Catalogue):
    """The catalogue's queries as a training set table (what ``MonitorInputs.from_training_set`` reads): per query
    a user ``u<q>``, its history items as train rows on days 1-3 and its target as the test row on day 100; the
    query vectors are the rows of a reference tower's user table (``user_vectors``)."""
    import pyarrow as pa

    q = len(catalogue.queries)
    ids = catalogue.items.ids
    indptr = catalogue.queries.history_indptr
    owner = np.repeat(np.arange(q), np.diff(indptr))  # (h,)
    users = np.asarray([f"u{u}" for u in range(q)], dtype=object)
    day = np.datetime64("2024-01-01", "us")
    rank = np.arange(owner.size) - indptr[owner]  # 0, 1, 2 within a query's history
    user_column = np.concatenate([users[owner], users])
    return pa.table({
        "user_id": user_column,
        "item_id": np.concatenate([ids[catalogue.queries.history_indices], ids[catalogue.queries.targets]]),
        "event_timestamp": pa.array(np.concatenate([day + (1 + rank) * np.timedelta64(86_400_000_000, "us"),
                                                    np.full(q, day + np.timedelta64(100 * 86_400_000_000, "us"))]),
                                    type=pa.timestamp("us", tz="UTC")),
        "split": ["train"] * owner.size + ["test"] * q,
        "user_features__id": user_column,
    })
