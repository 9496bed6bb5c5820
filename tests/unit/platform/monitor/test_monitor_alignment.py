"""The pure alignment figures against values worked out by hand on a tiny collection, and the exact chunked top-K."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from tower_platform.monitor.alignment import QuerySet, ServedItems, alignment_figures, encode_segments
from tower_platform.monitor.exact_top_k import target_ranks, top_k_items
from tower_platform.monitor.inputs import MonitorInputs
from tower_platform.monitor.thresholds import MonitorThresholds, find_breaches, load_thresholds
from tower_platform.registry.entities import AlignmentSegment
from tower_platform.errors import ConfigError

# Five items in 2-d:
#   i0 (1, 0)  A head  3 training interactions
#   i1 (0, 1)  A head  1
#   i2 (-1, 0) A tail  0
#   i3 (0, 1)  B torso 4      (B is collapsed: both its vectors are the same point)
#   i4 (0, 1)  B tail  2
VECTORS = np.array([[1, 0], [0, 1], [-1, 0], [0, 1], [0, 1]], dtype=np.float32)
ITEMS = ServedItems(
    ids=np.array(["i0", "i1", "i2", "i3", "i4"]),
    vectors=VECTORS,
    categories=np.array(["A", "A", "A", "B", "B"], dtype=object),
    popularity=np.array(["head", "head", "tail", "torso", "tail"], dtype=object),
    interaction_counts=np.array([3, 1, 0, 4, 2]),
)


def _queries() -> QuerySet:
    # q0 = (1, 0.1), target i0, no history: scores i0 1.0, i1 / i3 / i4 0.1, i2 -1 -> i0 at rank 1
    # q1 = (0.2, 1), target i2, history {i1} (excluded): scores i3 1, i4 1, i0 0.2, i2 -0.2 -> i2 at rank 4
    # q2 = (-1, 0), target i4, no history: scores i2 1, i1 / i3 / i4 0 (a tie), i0 -1 -> i4 at rank 2, 3 or 4
    return QuerySet(
        vectors=np.array([[1, 0.1], [0.2, 1], [-1, 0]], dtype=np.float32),
        targets=np.array([0, 2, 4]),
        history_indptr=np.array([0, 0, 1, 1]),
        history_indices=np.array([1]),
        n_skipped=1,
    )


def test_figures_match_the_hand_computed_values():
    figures = alignment_figures(ITEMS, _queries(), k=4, query_chunk=2, item_chunk=2)
    by = {(s.kind, s.segment): s for s in figures.segments}
    a, b = by["category", "A"], by["category", "B"]
    assert figures.major_category == "A" and figures.n_items == 5 and figures.n_queries == 3 and figures.n_skipped == 1

    # A: mean (0, 1/3); centred x = (1, -1/3), (0, 2/3), (-1, -1/3)
    #    C(A) = 1/3 [[2, 0], [0, 2/3]] = [[2/3, 0], [0, 2/9]];  B collapsed: C(B) = 0
    #    ||C(A) - C(B)||_F^2 = 4/9 + 4/81 = 40/81, relative = 1.0 (a collapsed segment)
    assert a.alignment_distance == pytest.approx(0.0) and a.relative_alignment == pytest.approx(0.0)
    assert b.alignment_distance == pytest.approx(40 / 81) and b.relative_alignment == pytest.approx(1.0)
    # centroid norms: ||(0, 1/3)|| = 1/3 for A, ||(0, 1)|| = 1 for B; every vector has norm 1
    assert a.centroid_norm == pytest.approx(1 / 3) and b.centroid_norm == pytest.approx(1.0)
    assert a.mean_norm == pytest.approx(1.0) and b.mean_norm == pytest.approx(1.0)
    # training shares: A (3 + 1 + 0) / 10, B (4 + 2) / 10
    assert (a.item_count, b.item_count) == (3, 2)
    assert a.interaction_share == pytest.approx(0.4) and b.interaction_share == pytest.approx(0.6)

    # top-4: q0 -> i0 and all three 0.1 ties (i1, i3, i4); q2 -> i2 and all three 0 ties: every item is covered.
    # A's queries: q0 rank 1 (ndcg 1), q1 rank 4 (ndcg 1/log2(5)); B's query q2 hits at rank 2-4 (the tie).
    assert a.n_queries == 2 and b.n_queries == 1
    assert a.recall == pytest.approx(1.0) and a.ndcg == pytest.approx((1 + 1 / math.log2(5)) / 2)
    assert b.recall == pytest.approx(1.0) and 1 / math.log2(5) <= b.ndcg <= 1 / math.log2(3)
    assert a.coverage == pytest.approx(1.0) and b.coverage == pytest.approx(1.0)


def test_k_cuts_recall_ndcg_and_coverage():
    # with K = 2: q0 -> i0 + one of the 0.1 ties, q1 -> i3, i4 (i2 at rank 4 misses), q2 -> i2 + one tie at 0.
    figures = alignment_figures(ITEMS, _queries(), k=2, query_chunk=2, item_chunk=2)
    by = {(s.kind, s.segment): s for s in figures.segments}
    a, b = by["category", "A"], by["category", "B"]
    assert a.recall == pytest.approx(0.5) and a.ndcg == pytest.approx(0.5)  # q0 hit at rank 1, q1 missed
    assert b.coverage == pytest.approx(1.0)  # q1's top-2 is exactly i3, i4
    # A: i0 (q0) and i2 (q2) are covered for sure; i1 only when a tie falls on it: 2/3 or 1
    assert a.coverage in (pytest.approx(2 / 3), pytest.approx(1.0))


def test_popularity_buckets_in_head_torso_tail_order_with_their_figures():
    figures = alignment_figures(ITEMS, _queries(), k=4)
    buckets = [s for s in figures.segments if s.kind == "popularity"]
    assert [s.segment for s in buckets] == ["head", "torso", "tail"]
    head, torso, tail = buckets
    assert (head.item_count, torso.item_count, tail.item_count) == (2, 1, 2)
    assert head.interaction_share == pytest.approx(0.4) and tail.interaction_share == pytest.approx(0.2)
    # head = i0 (1, 0), i1 (0, 1): mean (1/2, 1/2), C = [[1/4, -1/4], [-1/4, 1/4]]
    # ||C(A) - C(head)||^2 = (2/3 - 1/4)^2 + 2 (1/4)^2 + (2/9 - 1/4)^2
    expected = (2 / 3 - 1 / 4) ** 2 + 2 * (1 / 4) ** 2 + (2 / 9 - 1 / 4) ** 2
    assert head.alignment_distance == pytest.approx(expected)
    assert head.centroid_norm == pytest.approx(math.sqrt(0.5))
    assert head.n_queries == 1 and head.recall == pytest.approx(1.0)  # q0 (target i0)
    assert torso.n_queries == 0 and torso.recall is None


def test_chunked_top_k_equals_a_full_sort_with_history_excluded():
    rng = np.random.default_rng(3)
    items = rng.normal(size=(500, 6)).astype(np.float32)
    queries = rng.normal(size=(70, 6)).astype(np.float32)
    lengths = rng.integers(0, 5, size=70)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    history = rng.integers(0, 500, size=int(lengths.sum()))
    query_set = QuerySet(queries, np.zeros(70, dtype=np.int64), indptr, history)
    top = top_k_items(query_set, items, k=12, query_chunk=16, item_chunk=37)
    scores = queries @ items.T
    rows = np.repeat(np.arange(70), lengths)
    scores[rows, history] = -np.inf
    np.testing.assert_array_equal(top, np.argsort(-scores, axis=1, kind="stable")[:, :12])
    assert not np.isin(history[rows == 3], top[3]).any() and lengths[3] > 0


def test_target_ranks_are_one_based_and_zero_outside_the_top_k():
    top = np.array([[4, 2, 9], [1, 0, -1]])
    np.testing.assert_array_equal(target_ranks(top, np.array([9, 7])), [3, 0])


def test_missing_categories_become_one_segment():
    names, codes = encode_segments(pa.array(["b", None, "", "a"]))
    assert names == ("(none)", "a", "b") and codes.tolist() == [2, 0, 0, 1]


def _segment(kind, name, items, *, relative=0.3, norm=1.0, queries=40, recall=0.3, coverage=0.2, deltas=None,
             pooled=False):
    return AlignmentSegment(kind, name, items, 0.1, 0.5, relative, norm, 0.5, queries, recall, 0.1, coverage,
                            deltas=deltas or {}, pooled=pooled)


def test_breaches_name_the_segment_and_figure_pool_small_categories_and_need_a_significant_recall_drop():
    # B: 60 items, collapsed (distance 1.0), never reached (coverage 0), Recall@100 2/40 = 0.05 against 0.40.
    #    Wilson upper bound of 2/40 at 95 % (z = 1.6449): (0.05 + z^2/80 + z sqrt(0.05 * 0.95 / 40 + z^2 / 6400))
    #    / (1 + z^2/40) = 0.1498 / 1.0676 = 0.1403, so the drop is at least 1 - 0.1403 / 0.4 = 65 % > 50 %: a breach.
    collapsed = _segment("category", "B", 60, relative=1.0, coverage=0.0, recall=0.05,
                         deltas={"recall": -0.35, "n_queries": 0})
    # D: 3/30 = 0.10 against 0.40 is a 75 % drop, but its upper bound 0.2255 allows a drop of only 44 %: no breach.
    noisy = _segment("category", "D", 60, queries=30, recall=0.1, deltas={"recall": -0.3, "n_queries": 0})
    # C: collapsed too, but pooled (few items): judged only inside the pooled segment, which is healthy.
    small = _segment("category", "C", 3, relative=1.0, coverage=0.0, pooled=True)
    pool = _segment("pooled", "small categories", 200, relative=0.4, queries=10, coverage=0.0)  # 10 < 30 queries
    bucket = _segment("popularity", "tail", 500, relative=1.0, norm=1.02)  # no distance gate on buckets; norm off
    found = find_breaches([collapsed, noisy, small, pool, bucket], MonitorThresholds())
    assert [(b.segment, b.figure) for b in found] == [
        ("B", "relative_alignment"), ("B", "coverage"), ("tail", "mean_norm"), ("B", "recall")]
    assert found[3].value == pytest.approx(0.875)  # the observed drop (0.40 - 0.05) / 0.40
    assert found[3].severity == pytest.approx(0.6492 - 0.5, abs=1e-3)
    assert found[3].message == ("category 'B': Recall@100 0.050 on 40 queries, down 88% from 0.400 (at least 65% "
                                "at 95% confidence; maximum drop 50%)")
    assert found[1].message == "category 'B': coverage@100 0.000 below the minimum 0.005"
    relaxed = MonitorThresholds(max_alignment_distance=1.0, min_coverage=0.0, max_recall_drop=0.8, max_norm_error=0.05)
    assert find_breaches([collapsed, noisy, small, pool, bucket], relaxed) == []
    # the pool is gated like a category once it has the support
    supported = _segment("pooled", "small categories", 200, relative=0.97, queries=30, coverage=0.001)
    assert [b.figure for b in find_breaches([supported], MonitorThresholds())] == ["relative_alignment", "coverage"]


def test_breaches_come_worst_first_within_each_check():
    segments = [_segment("category", name, 80, relative=r) for name, r in (("x", 0.96), ("y", 1.0), ("z", 0.98))]
    assert [b.segment for b in find_breaches(segments, MonitorThresholds())] == ["y", "z", "x"]


def test_wilson_upper_bound_against_hand_computed_values():
    from tower_platform.monitor.thresholds import wilson_upper

    # 0 hits in n: z^2 / (n + z^2) = 2.7055 / 32.7055 = 0.0827 for n = 30
    assert wilson_upper(0, 30, confidence=0.95) == pytest.approx(2.7055 / 32.7055, abs=1e-4)
    assert wilson_upper(2, 40, confidence=0.95) == pytest.approx(0.1403, abs=1e-4)
    assert wilson_upper(30, 30, confidence=0.95) == pytest.approx(1.0) and wilson_upper(0, 0, confidence=0.95) == 1.0


def test_thresholds_from_the_dataset_section_and_a_file(tmp_path):
    path = tmp_path / "monitor.yaml"
    path.write_text("monitor:\n  min_coverage: 0.2\n  k: 10\n")
    loaded = load_thresholds(dataset_section={"k": 50, "max_recall_drop": 0.3}, path=path)
    assert (loaded.k, loaded.min_coverage, loaded.max_recall_drop) == (10, 0.2, 0.3)
    with pytest.raises(ConfigError, match="unknown monitor keys"):
        load_thresholds(dataset_section={"min_coverge": 0.1})
    with pytest.raises(ConfigError, match="wrong type"):
        load_thresholds(dataset_section={"k": "ten"})
    with pytest.raises(ConfigError, match="recall_confidence=1.0 must be at least 0.5 and below 1"):
        load_thresholds(dataset_section={"recall_confidence": 1.0})
    with pytest.raises(ConfigError, match="max_alignment_distance=2.5 is above 1, the largest relative alignment"):
        load_thresholds(dataset_section={"max_alignment_distance": 2.5})  # a threshold of the old, unbounded scale
    with pytest.raises(ConfigError, match="worst=0 must be at least 1"):
        load_thresholds(dataset_section={"worst": 0})
    assert load_thresholds(dataset_section={"worst": 3, "min_items": 5}).pooling() == {"min_items": 5, "min_queries": 30}


def test_monitor_inputs_skip_unserved_and_repeated_targets_and_exclude_histories():
    # user u: i1 (train, t=1), i2 (test, t=5), i1 again (test, t=6: a repeat), iX (test, t=7: not served)
    # user v: i0 (test, t=5) with an empty history
    interactions = pa.table({
        "user_id": ["u", "u", "u", "u", "v"],
        "item_id": ["i1", "i2", "i1", "iX", "i0"],
        "event_timestamp": pa.array([1, 5, 6, 7, 5], type=pa.int64()),
        "split": ["train", "test", "test", "test", "test"],
        "f": [0.0, 1.0, 2.0, 3.0, 4.0],
    })
    inputs = MonitorInputs.from_training_set(interactions)
    embedded: list[list[float]] = []

    def embed(table: pa.Table) -> np.ndarray:
        embedded.append(table.column("f").to_pylist())
        return np.ones((table.num_rows, 2), dtype=np.float32)

    queries = inputs.query_set(np.array(["i0", "i1", "i2"]), embed=embed)
    assert embedded == [[1.0, 4.0]]  # only the kept queries are embedded
    assert queries.targets.tolist() == [2, 0] and queries.n_skipped == 2
    assert queries.history_indptr.tolist() == [0, 1, 1] and queries.history_indices.tolist() == [1]
    np.testing.assert_array_equal(inputs.interaction_counts(np.array(["i0", "i1", "i2"])), [0, 1, 0])


def test_a_pooled_category_with_enough_items_is_still_gated_on_the_item_figures():
    # 80 items but 3 test queries: pooled (query figures judged in the pool), yet its collapse and norms are checked
    big = _segment("category", "E", 80, relative=1.0, norm=1.5, queries=3, coverage=0.0, recall=0.0, pooled=True,
                   deltas={"recall": -0.5, "n_queries": 0})
    tiny = _segment("category", "F", 10, relative=1.0, norm=1.5, queries=3, coverage=0.0, pooled=True)
    found = find_breaches([big, tiny], MonitorThresholds())
    assert [(b.segment, b.figure) for b in found] == [("E", "relative_alignment"), ("E", "mean_norm")]
