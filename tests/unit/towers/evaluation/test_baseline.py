"""Classical baselines: closed forms against direct numpy computations, neighbour truncation, harness adapters.

The memory-safe paths (blocked sparse ItemKNN, in-place EASE, the item cut) are checked against the dense
implementations in test_baseline_scale.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from towers.evaluation.baseline import (
    EASE,
    ItemKNN,
    MostPopular,
    cutoff_scorer,
    fit_on_periods,
    next_item_scorer,
    tune,
)
from towers.evaluation.ease import ease_weights
from towers.evaluation.item_knn import neighbour_weights, truncate_neighbours
from towers.evaluation import InteractionHistory, InteractionLog, evaluate_next_item


def random_log(*, seed: int, n_users: int = 12, n_items: int = 15, n: int = 160) -> InteractionLog:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    items = rng.integers(0, n_items, n)
    timestamps = rng.integers(0, 40, n)  # many shared timestamps and repeated (user, item) pairs
    return InteractionLog.split_by_time(
        users, item_codes=items, timestamps=timestamps, n_users=n_users, n_items=n_items
    )


def direct_ease(matrix: np.ndarray, l2: float) -> np.ndarray:
    """B = I - P diagMat(1 / diag(P)), P = (X^T X + l2 I)^-1, by numpy.linalg.solve."""
    gram = matrix.T @ matrix + l2 * np.eye(matrix.shape[1])
    precision = np.linalg.solve(gram, np.eye(matrix.shape[1]))
    return np.eye(matrix.shape[1]) - precision / np.diag(precision)[None, :]


@pytest.mark.parametrize("shape", [(6, 4), (4, 6)])  # more users than items (Cholesky) and fewer (Woodbury)
def test_ease_weights_match_a_direct_solve(shape):
    matrix = (np.random.default_rng(1).random(shape) < 0.5).astype(np.float64)
    weights = ease_weights(matrix, l2=3.0)
    np.testing.assert_allclose(weights, direct_ease(matrix, 3.0), atol=1e-7)  # float32 out
    assert np.all(np.diag(weights) == 0.0)


def test_ease_scores_are_history_times_weights():
    # users 0..2 of a 3 x 3 binary matrix; item 3 is never seen: EASE does not cover it and never recommends it
    users = np.array([0, 0, 1, 1, 2])
    items = np.array([0, 1, 1, 2, 0])
    model = EASE(l2=2.0).fit(users, item_codes=items, n_users=3, n_items=4)
    matrix = np.zeros((3, 3))
    matrix[users, items] = 1.0
    history = InteractionHistory.build(InteractionLog(users, items, np.arange(5), np.array(["train"] * 5), 3, 4))
    batch = history.batch_at(np.array([0, 1]), cutoff=10)  # histories {0, 1} and {1, 2}
    expected = np.array([[1, 1, 0], [0, 1, 1]]) @ direct_ease(matrix, 2.0)
    scores = model.score_histories(batch)
    np.testing.assert_allclose(scores[:, :3], expected, atol=1e-6)
    assert np.all(scores[:, 3] == -np.inf)


def test_cosine_similarity_of_binary_columns():
    # columns: a = users {0, 1}, b = {1, 2}, c = {0, 1, 2}: cos(a, b) = 1 / 2, cos(a, c) = 2 / sqrt(6)
    # (all neighbours kept: the whole similarity, one row per block)
    matrix = sp.csr_matrix(np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]], dtype=np.float32))
    similarity = neighbour_weights(matrix, neighbours=3, block_entries=1).toarray()
    assert similarity[0, 1] == pytest.approx(0.5)
    assert similarity[0, 2] == pytest.approx(2 / math.sqrt(6))
    assert similarity[1, 0] == pytest.approx(0.5)
    assert np.all(np.diag(similarity) == 0)


def test_item_knn_keeps_the_top_neighbours_of_each_item():
    # neighbours = 2.
    # row 0: .9 > .5 = .5 > .1 -> .9 kept; the two items tied at .5 share the one slot left: .25 each
    # row 1: .3 > .2 > .1 -> .3 and .2 kept
    # row 2: only one non-zero entry -> it stays; zeros stay zero
    similarity = torch.tensor(
        [[0.0, 0.9, 0.5, 0.5, 0.1], [0.3, 0.0, 0.2, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0, 0.7]]
    )
    truncated = truncate_neighbours(similarity, neighbours=2)
    expected = torch.tensor(
        [[0.0, 0.9, 0.25, 0.25, 0.0], [0.3, 0.0, 0.2, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.7]]
    )
    torch.testing.assert_close(truncated, expected)


def test_item_knn_scores_sum_the_similarities_of_history_items():
    # users {0: items 0, 1}, {1: items 1, 2}, {2: items 0, 1, 2}: cos(0,1) = 2/sqrt(6), cos(0,2) = 1/2,
    # cos(1,2) = 2/sqrt(6). With 1 neighbour per item: 0 -> 1, 1 -> 0 or 2 (tied: half each), 2 -> 1.
    # History {0}: item 1 scores 2/sqrt(6), item 2 scores 0. History {1}: items 0 and 2 score 1/sqrt(6).
    users = np.array([0, 0, 1, 1, 2, 2, 2])
    items = np.array([0, 1, 1, 2, 0, 1, 2])
    model = ItemKNN(neighbours=1).fit(users, item_codes=items, n_users=3, n_items=3)
    log = InteractionLog(users, items, np.arange(7), np.array(["train"] * 7), 3, 3)
    batch = InteractionHistory.build(log).batch(np.array([0, 4]), np.array([1, 5]))  # histories {0} and {0}
    scores = model.score_histories(batch)
    np.testing.assert_allclose(scores[0], [0.0, 2 / math.sqrt(6), 0.0], atol=1e-6)
    one = InteractionHistory.build(log).batch(np.array([2]), np.array([3]))  # history {1}
    np.testing.assert_allclose(model.score_histories(one)[0], [1 / math.sqrt(6), 0.0, 1 / math.sqrt(6)], atol=1e-6)


def test_most_popular_scores_fit_counts():
    model = MostPopular().fit(np.array([0, 1, 1, 2]), item_codes=np.array([2, 2, 0, 2]), n_users=3, n_items=4)
    log = InteractionLog(np.array([0]), np.array([1]), np.array([0]), np.array(["train"]), 1, 4)
    scores = model.score_histories(InteractionHistory.build(log).batch_for_rows(np.array([0, 0])))
    assert scores.tolist() == [[1.0, 0.0, 3.0, 0.0]] * 2


@pytest.mark.parametrize("make_model", [lambda: EASE(l2=5.0), lambda: ItemKNN(neighbours=3), MostPopular,
                                        lambda: EASE(l2=5.0, max_items=6)])
def test_running_increments_give_the_scores_of_whole_histories(make_model):
    log = random_log(seed=3)
    model = fit_on_periods(make_model(), log, periods="train")
    history = InteractionHistory.build(log)
    rows = np.random.default_rng(4).permutation(len(log))[:70]
    whole = model.score_histories(history.batch_for_rows(rows))
    np.testing.assert_allclose(next_item_scorer(model, history=history)(rows), whole, rtol=1e-5, atol=1e-5)


def test_cutoff_scorer_uses_the_history_before_the_cutoff():
    log = random_log(seed=5)
    model = fit_on_periods(EASE(l2=5.0), log, periods="train")
    history = InteractionHistory.build(log)
    users = np.array([0, 3, 7])
    expected = model.score_histories(history.batch_at(users, cutoff=20))
    np.testing.assert_array_equal(cutoff_scorer(model, history=history, cutoff=20)(users), expected)


def test_tune_keeps_the_value_with_the_best_validation_figure():
    log = random_log(seed=6)
    history = InteractionHistory.build(log)
    result = tune(lambda l2: EASE(l2=l2), grid=[0.5, 5.0, 50.0], log=log, history=history, metric="mrr")
    assert list(result.figures) == [0.5, 5.0, 50.0]
    assert result.figures[result.best] == max(result.figures.values())
    model = fit_on_periods(EASE(l2=5.0), log, periods="train")
    direct = evaluate_next_item(
        log, next_item_scorer(model, history=history), fit_periods="train", eval_period="validation", history=history
    )
    assert result.figures[5.0] == pytest.approx(direct.metrics["mrr"])


def test_unfitted_models_and_bad_codes_are_refused():
    with pytest.raises(ValueError, match="not fitted"):
        EASE().score_histories(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_items"):
        ItemKNN().fit(np.array([0]), item_codes=np.array([5]), n_users=1, n_items=3)
