"""The memory-safe baselines against dense implementations on small logs (sizes small; no timing).

ItemKNN's blocked sparse product, EASE's blocked Gram matrix and in-place inverse, the EASE item cut and the
recent-window MostPopular must give what the dense formulas give: the same weights and the same ranks.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from towers.evaluation import FitItems, InteractionHistory, InteractionLog, NextItemQueries, evaluate_next_item
from towers.evaluation.baseline import EASE, ItemKNN, MostPopular, classical_baselines, fit_on_periods, next_item_scorer
from towers.evaluation.ease import ease_weights, frequent_items, gram, invert_spd_in_place
from towers.evaluation.item_knn import neighbour_weights, truncate_neighbours


def skewed_log(*, seed: int, n_users: int = 80, n_items: int = 200, n: int = 1500) -> InteractionLog:
    """Popular and rare items (many ties at the k-th neighbour), shared timestamps, repeated pairs."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    items = rng.choice(n_items, size=n, p=popularity / popularity.sum())
    users = rng.integers(0, n_users, n)
    timestamps = rng.integers(0, 300, n)
    return InteractionLog.split_by_time(users, item_codes=items, timestamps=timestamps, n_users=n_users, n_items=n_items)


def dense_binary(log: InteractionLog, periods) -> np.ndarray:
    mask = log.mask(periods)
    matrix = np.zeros((log.n_users, log.n_items), dtype=np.float32)  # (U, I): small logs only
    matrix[log.user_codes[mask], log.item_codes[mask]] = 1.0
    return matrix


def dense_item_knn(matrix: np.ndarray, *, neighbours: int) -> np.ndarray:
    """The dense implementation: cosine of all item columns at once, zero diagonal, truncated rows."""
    x = torch.from_numpy(matrix)
    co_counts = x.T @ x  # (I, I)
    norms = co_counts.diagonal().clamp_min(1e-12).sqrt()
    similarity = co_counts / norms[:, None] / norms[None, :]
    similarity.fill_diagonal_(0.0)
    return truncate_neighbours(similarity, neighbours=neighbours).numpy()


def dense_scorer(weights: np.ndarray, *, history: InteractionHistory, fill: float = 0.0):
    """score(query_rows) = dense binary history @ dense weights over all item codes (whole histories)."""

    def score(rows: np.ndarray) -> np.ndarray:
        scores = history.batch_for_rows(rows).to_dense() @ weights  # (B, I)
        return np.where(np.isnan(scores), fill, scores).astype(np.float32)

    return score


@pytest.mark.parametrize("block_entries", [1, 130, 1 << 24])  # one row per block, a few rows, everything at once
def test_blocked_item_knn_weights_equal_the_dense_ones(block_entries):
    log = skewed_log(seed=1)
    matrix = dense_binary(log, "train")
    seen = np.flatnonzero(matrix.sum(axis=0))
    expected = dense_item_knn(matrix[:, seen], neighbours=5)
    blocked = neighbour_weights(sp.csr_matrix(matrix[:, seen]), neighbours=5, block_entries=block_entries)
    np.testing.assert_array_equal(blocked.toarray(), expected)  # the same float32 operations: equal bit for bit
    tied_rows = (expected > 0).sum(axis=1) > 5
    assert tied_rows.any(), "the log must exercise the tie rule at the k-th neighbour"


def test_sparse_item_knn_ranks_equal_the_dense_implementation():
    log = skewed_log(seed=2)
    history = InteractionHistory.build(log)
    periods = ("train", "validation")
    model = fit_on_periods(ItemKNN(neighbours=5), log, periods=periods)
    matrix = dense_binary(log, periods)
    seen = np.flatnonzero(matrix.sum(axis=0))
    weights = np.zeros((log.n_items, log.n_items), dtype=np.float32)
    weights[np.ix_(seen, seen)] = dense_item_knn(matrix[:, seen], neighbours=5)
    ours = evaluate_next_item(log, next_item_scorer(model, history=history), history=history)
    dense = evaluate_next_item(log, dense_scorer(weights, history=history), history=history)
    assert len(ours.ranks) > 50
    np.testing.assert_array_equal(ours.ranks, dense.ranks)
    assert ours.metrics == dense.metrics


def test_blocked_gram_and_in_place_inverse_equal_numpy():
    rng = np.random.default_rng(3)
    x = (rng.random((50, 12)) < 0.3).astype(np.float64)
    np.testing.assert_array_equal(gram(sp.csr_matrix(x), block_entries=25), x.T @ x)  # 2 rows per block
    for block_entries in (12 * 5, 1 << 24):  # mirrored 5 rows at a time, and at once
        a = x.T @ x + 4.0 * np.eye(12)
        expected = np.linalg.inv(a)
        invert_spd_in_place(a, block_entries=block_entries)
        np.testing.assert_allclose(a, expected, rtol=1e-10, atol=1e-13)
        np.testing.assert_array_equal(a, a.T)  # both triangles filled


@pytest.mark.parametrize("shape", [(80, 15), (10, 15)])  # Gram path (more users) and Woodbury path (fewer)
def test_ease_weights_equal_the_dense_formula(shape):
    rng = np.random.default_rng(4)
    x = (rng.random(shape) < 0.3).astype(np.float64)
    x[0, :] = 1.0  # every item seen
    precision = np.linalg.inv(x.T @ x + 7.0 * np.eye(shape[1]))
    expected = np.eye(shape[1]) - precision / np.diag(precision)[None, :]  # B = I - P diagMat(1 / diag(P))
    np.testing.assert_allclose(ease_weights(sp.csr_matrix(x), l2=7.0), expected, atol=1e-6)


def test_frequent_items_take_the_most_interacted_ties_by_lower_code():
    counts = np.array([5, 0, 3, 5, 1, 3, 2])
    # by count: items 0 and 3 (5), then 2 and 5 (3; the lower code first), 6 (2), 4 (1); item 1 never seen
    assert frequent_items(counts, max_items=3, min_count=1).tolist() == [0, 2, 3]
    assert frequent_items(counts, max_items=None, min_count=3).tolist() == [0, 2, 3, 5]
    assert frequent_items(counts, max_items=None, min_count=1).tolist() == [0, 2, 3, 4, 5, 6]


def test_ease_with_an_item_cut_is_ease_on_the_covered_items_and_never_recommends_the_others():
    log = skewed_log(seed=5)
    history = InteractionHistory.build(log)
    periods = ("train", "validation")
    model = fit_on_periods(EASE(l2=10.0, max_items=60), log, periods=periods)
    counts = np.bincount(log.item_codes[log.mask(periods)], minlength=log.n_items)
    covered = frequent_items(counts, max_items=60, min_count=1)
    assert model.space is not None and model.space.items.tolist() == covered.tolist()
    assert model.describe() == f"EASE covers 60 of {np.count_nonzero(counts)} fit items (max_items 60, min_count 1)"

    x = dense_binary(log, periods)[:, covered].astype(np.float64)
    precision = np.linalg.inv(x.T @ x + 10.0 * np.eye(covered.size))
    restricted = np.eye(covered.size) - precision / np.diag(precision)[None, :]

    def dense(rows: np.ndarray) -> np.ndarray:
        histories = history.batch_for_rows(rows).to_dense()[:, covered]  # (B, F')
        scores = np.full((rows.size, log.n_items), -np.inf, dtype=np.float32)
        scores[:, covered] = histories @ restricted
        return scores

    ours = evaluate_next_item(log, next_item_scorer(model, history=history), history=history)
    reference = evaluate_next_item(log, dense, history=history)
    np.testing.assert_array_equal(ours.ranks, reference.ranks)

    # a query whose target is uncovered ranks it after every covered candidate (covered items not in its history)
    fit = FitItems.build(log.item_codes[log.mask(periods)], n_items=log.n_items)
    queries = NextItemQueries.build(log, fit=fit, history=history, eval_mask=log.mask("test"))
    uncovered = ~np.isin(queries.targets, covered)
    assert uncovered.sum() >= 5
    batch = history.batch_for_rows(queries.rows[uncovered])
    covered_in_history = np.add.reduceat(np.isin(batch.indices, covered), batch.indptr[:-1]) * (batch.lengths() > 0)
    assert np.all(ours.ranks[uncovered] > covered.size - covered_in_history)


def test_an_uncovered_item_ranks_after_every_covered_one():
    # one user, items 0, 1, 2 with counts 3, 2, 1; EASE keeps the top 2, so item 2 scores -inf for every query
    users = np.array([0, 0, 0, 1, 1, 2])
    items = np.array([0, 1, 2, 0, 1, 0])
    model = EASE(l2=1.0, max_items=2).fit(users, item_codes=items, n_users=3, n_items=3)
    log = InteractionLog(users, items, np.arange(6), np.array(["train"] * 6), 3, 3)
    scores = model.score_histories(InteractionHistory.build(log).batch_for_rows(np.arange(6)))
    assert np.all(scores[:, 2] == -np.inf)
    assert np.all(np.isfinite(scores[:, :2]))


def test_recent_most_popular_counts_the_last_days_of_the_fit_data():
    day = 86_400
    # the latest fit interaction is at day 30; a 7-day window is (day 23, day 30]
    times = np.array([1, 2, 24, 25, 29, 30, 23]) * day
    items = np.array([0, 0, 1, 1, 2, 1, 0])  # item 0 at days 1, 2 and exactly 23 (outside), item 1 three times inside
    users = np.zeros(7, dtype=np.int64)
    recent = MostPopular(window_days=7).fit(users, item_codes=items, n_users=1, n_items=4, times_s=times)
    overall = MostPopular().fit(users, item_codes=items, n_users=1, n_items=4)
    assert recent.counts.tolist() == [0.0, 3.0, 1.0, 0.0]
    assert overall.counts.tolist() == [3.0, 3.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="times_s"):
        MostPopular(window_days=7).fit(users, item_codes=items, n_users=1, n_items=4)


def test_recent_window_follows_the_logs_time_unit():
    # the same interactions in seconds and in microseconds give the same window counts
    seconds = np.array([0, 10, 20, 29]) * 86_400
    items = np.array([0, 1, 1, 2])
    users = np.array([0, 1, 2, 3])
    for ticks in (1, 1_000_000):
        log = InteractionLog(users, items, seconds * ticks, np.array(["train"] * 4), 4, 3, ticks)
        model = fit_on_periods(MostPopular(window_days=10), log, periods="train")
        assert model.counts.tolist() == [0.0, 1.0, 1.0]  # (day 19, day 29]: day 20 (item 1) and day 29 (item 2)


def test_the_classical_baselines_are_named_once():
    names = list(classical_baselines(ease_l2=200.0, recent_days=(7, 30)))
    assert names == ["MostPopular", "MostPopular (last 7 days)", "MostPopular (last 30 days)", "ItemKNN", "EASE (l2 200)"]


@pytest.mark.parametrize("entries", [1, 7, 1 << 23])  # a row at a time, a few rows, everything at once
def test_sparse_product_equals_the_dense_product(entries):
    from towers.evaluation.item_space import sparse_product

    rng = np.random.default_rng(8)
    dense = (rng.random((9, 30)) < 0.3).astype(np.float32)
    dense[4] = 0.0  # an empty history
    history = sp.csr_matrix(dense)
    weights = sp.csr_matrix(np.where(rng.random((30, 30)) < 0.2, rng.random((30, 30)), 0.0).astype(np.float32))
    expected = history.toarray().astype(np.float64) @ weights.toarray().astype(np.float64)
    np.testing.assert_allclose(sparse_product(sp.csr_matrix(history), weights, entries=entries), expected, rtol=1e-12)
