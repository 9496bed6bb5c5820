"""The evaluation harness on small constructed logs whose figures are worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from towers.evaluation import (
    FitItems,
    HistoryBatch,
    InteractionHistory,
    InteractionLog,
    TimeSplit,
    clustered_standard_error,
    evaluate_at_cutoff,
    evaluate_next_item,
    next_item_metrics,
    rank_targets,
    validation_recall,
)

G2, G3, G4 = 1 / math.log2(2), 1 / math.log2(3), 1 / math.log2(4)  # NDCG gains of ranks 1, 2, 3


def as_sets(batch: HistoryBatch) -> list[set[int]]:
    return [set(batch.indices[batch.indptr[b] : batch.indptr[b + 1]].tolist()) for b in range(batch.n_rows)]


def make_log(rows: list[tuple[int, int, int, str]], *, n_users: int, n_items: int) -> InteractionLog:
    users, items, times, periods = zip(*rows, strict=True)
    return InteractionLog(np.array(users), np.array(items), np.array(times), np.array(periods), n_users, n_items)


# --- the worked next-item case ---------------------------------------------------------------------------------------
#
# Items 0..5 plus fillers 6..125 (one train interaction each, by user 4); item 4 is never in the fit data.
# Train: u0 {0 t1, 1 t2, 5 t3}, u1 {0 t1, 1 t2, 2 t3}, u2 {0 t1, 2 t2, 3 t3}, u4 {6..125 at t1}.
# Fit counts: item 0: 3, items 1, 2: 2, items 3, 5 and fillers: 1. F = 125 fit items; columns in code order:
# item c -> column c for c <= 3, item 5 -> column 4, filler c -> column c - 1. The popularity order (count desc,
# code asc) is 0, 1, 2, 3, 5, 6, ..., 125, so every item's tie position equals its column.
#
# Test queries (u, item, t), kept in (user, time) order, with the scores of each user's scorer row:
#   u0 item 2 t10: history {0, 1, 5}; scores col2 .2, col3 .3, rest 0 -> col3 beats it             rank 2
#   u0 item 4 t11: item 4 is not a fit item                                                        skipped (unseen)
#   u0 item 1 t12: item 1 is in u0's history                                                       skipped (repeat)
#   u1 item 3 t10: history {0, 1, 2}; scores .9 .8 .7 .1 .5 on cols 0-4 -> col4 (.5) beats .1     rank 2
#   u2 item 5 t20: history {0, 2, 3}; all 0 -> ties by popularity: col1 (not yet seen, same t) wins rank 2
#   u2 item 1 t20: same timestamp as the row above, which it must not see; col0 is history        rank 1
#   u3 item 0 t15: cold; all 0 -> the most popular item                                            rank 1
#   u3 item 3 t16: history {0}; all 0 -> cols 1, 2 come first                                      rank 3
#   u5 item 31 t30: cold; scores -col, so column c ranks c + 1; item 31 is col 30                  rank 31
#   u5 item 111 t31: history {31}; col 110 is beaten by cols 0..109 except col 30                 rank 110
#
# Ranks 2, 2, 2, 1, 1, 3, 31, 110 over 8 queries from 5 users, 10 test interactions, 2 cold queries.
#   recall@10 = 6/8, recall@50 = recall@100 = 7/8
#   ndcg@10 = (3 G3 + 2 G2 + G4) / 8, ndcg@50 adds 1/log2(32) = 0.2
#   mrr = (3/2 + 2 + 1/3 + 1/31 + 0) / 8
#   recall@100 per user: u0 1, u1 1, u2 1, u3 1, u5 1/2 -> 0.9 (per query: 0.875)
#   head = the first round(0.2 * 125) = 25 items by popularity: every target but items 31 and 111 (tail, count 1)
#   -> head 6/6 = 1.0, tail 1/2, torso no queries.


def worked_log() -> InteractionLog:
    train = [
        (0, 0, 1), (0, 1, 2), (0, 5, 3),
        (1, 0, 1), (1, 1, 2), (1, 2, 3),
        (2, 0, 1), (2, 2, 2), (2, 3, 3),
    ] + [(4, filler, 1) for filler in range(6, 126)]  # fmt: skip
    test = [
        (0, 2, 10), (0, 4, 11), (0, 1, 12),
        (1, 3, 10),
        (2, 5, 20), (2, 1, 20),
        (3, 0, 15), (3, 3, 16),
        (5, 31, 30), (5, 111, 31),
    ]  # fmt: skip
    rows = [(u, i, t, "train") for u, i, t in train] + [(u, i, t, "test") for u, i, t in test]
    rng = np.random.default_rng(0)
    shuffled = [rows[k] for k in rng.permutation(len(rows))]  # the harness must not depend on the row order
    return make_log(shuffled, n_users=6, n_items=126)


def worked_scorer(log: InteractionLog):
    table = np.zeros((6, 125), dtype=np.float32)  # (users, F)
    table[0, 2], table[0, 3] = 0.2, 0.3
    table[1, :5] = [0.9, 0.8, 0.7, 0.1, 0.5]
    table[5] = -np.arange(125, dtype=np.float32)

    def score(query_rows: np.ndarray) -> np.ndarray:
        return table[log.user_codes[query_rows]]

    return score


WORKED_CATEGORIES = [["Drama"], ["Comedy", "Drama"], ["Comedy"], ["Horror"], ["Drama"], []] + [["Filler"]] * 120


def test_next_item_report_matches_the_worked_case():
    log = worked_log()
    report = evaluate_next_item(log, worked_scorer(log), fit_periods="train", eval_period="test")

    users = log.user_codes[np.flatnonzero(log.mask("test"))]
    assert sorted(report.ranks.tolist()) == sorted([2, 2, 2, 1, 1, 3, 31, 110])
    assert (report.n_queries, report.n_users, report.n_interactions) == (8, 5, 10)
    assert (report.n_skipped_unseen, report.n_skipped_repeat, report.n_cold, report.n_fit_items) == (1, 1, 2, 125)
    assert users.size == 10
    assert report.metrics["recall@10"] == pytest.approx(6 / 8)
    assert report.metrics["recall@50"] == pytest.approx(7 / 8)
    assert report.metrics["recall@100"] == pytest.approx(7 / 8)
    assert report.metrics["ndcg@10"] == pytest.approx((3 * G3 + 2 * G2 + G4) / 8)
    assert report.metrics["ndcg@50"] == pytest.approx((3 * G3 + 2 * G2 + G4 + 0.2) / 8)
    assert report.metrics["mrr"] == pytest.approx((1.5 + 2 + 1 / 3 + 1 / 31) / 8)
    assert report.recall_per_user == pytest.approx(0.9)
    assert report.by_popularity["head"] == {"recall@100": pytest.approx(1.0), "n_queries": 6.0}
    assert report.by_popularity["tail"] == {"recall@100": pytest.approx(0.5), "n_queries": 2.0}
    assert report.by_popularity["torso"]["n_queries"] == 0.0


def test_ranks_follow_the_queries_in_user_then_time_order():
    # u0 (rank 2), u1 (2), u2 t20 (2 for item 5, 1 for item 1), u3 t15 (1), t16 (3), u5 t30 (31), t31 (110)
    log = worked_log()
    report = evaluate_next_item(log, worked_scorer(log), fit_periods="train", eval_period="test")
    assert report.ranks[:2].tolist() == [2, 2]
    assert sorted(report.ranks[2:4].tolist()) == [1, 2]
    assert report.ranks[4:].tolist() == [1, 3, 31, 110]


def test_per_category_counts_a_query_in_every_category_of_its_target():
    # targets: item 2 (Comedy), 3 (Horror), 5 (none), 1 (Comedy, Drama), 0 (Drama), 3 (Horror), 31 and 111 (Filler)
    # Comedy: items 2, 1 both hit -> 1.0 (2 queries); Drama: items 1, 0 -> 1.0 (2); Horror: 1.0 (2);
    # Filler: rank 31 hit, rank 110 miss -> 0.5 (2). Item 4 (Drama) is only an unseen, skipped target.
    log = worked_log()
    report = evaluate_next_item(
        log, worked_scorer(log), fit_periods="train", eval_period="test", item_categories=WORKED_CATEGORIES
    )
    assert report.by_category == {
        "Comedy": {"recall@100": 1.0, "n_queries": 2.0},
        "Drama": {"recall@100": 1.0, "n_queries": 2.0},
        "Filler": {"recall@100": 0.5, "n_queries": 2.0},
        "Horror": {"recall@100": 1.0, "n_queries": 2.0},
    }
    headline = report.headline()
    assert headline["recall@100_category=Filler"] == 0.5
    assert "worst_category_recall@100" not in headline  # no category has 20 queries
    assert report.worst_category_recall(min_queries=2) == 0.5  # Filler, the lowest of the four
    assert report.worst_category_recall(min_queries=3) is None
    assert headline["skipped_unseen_share"] == pytest.approx(0.1)
    assert headline["skipped_repeat_share"] == pytest.approx(0.1)
    assert headline["n_queries"] == 8.0


def test_standard_error_is_clustered_by_user():
    # recall@100 per query: u0 1, u1 1, u2 1 1, u3 1 1, u5 1 0; mean 7/8.
    # residual sums per user: .125, .125, .25, .25, .125 - .875 = -.75; squares sum to .71875.
    # se = sqrt(5/4 * .71875) / 8 = 0.118482...
    log = worked_log()
    report = evaluate_next_item(log, worked_scorer(log), fit_periods="train", eval_period="test")
    assert report.standard_errors["recall@100"] == pytest.approx(math.sqrt(1.25 * 0.71875) / 8)
    assert clustered_standard_error(np.array([1.0, 0.0, 1.0, 0.0]), clusters=np.array([7, 7, 9, 9])) == 0.0


def test_an_empty_history_ranks_by_popularity():
    # A constant scorer leaves every query to the popularity order. u3's cold query (target item 0, the most
    # popular item) ranks 1; u5's cold query (item 31, column 30) ranks 31; u5's next query (item 111) ranks 110.
    log = worked_log()
    report = evaluate_next_item(
        log, lambda rows: np.zeros((len(rows), 125), dtype=np.float32), fit_periods="train", eval_period="test"
    )
    assert report.ranks[4:].tolist() == [1, 3, 31, 110]


def test_full_width_scores_are_restricted_to_fit_items():
    # The same scores given over all 126 item codes (item 4, not a fit item, scored highest) give the same ranks.
    log = worked_log()
    fit_scores = worked_scorer(log)
    columns = FitItems.build(log.item_codes[log.mask("train")], n_items=126).items

    def full_scores(rows: np.ndarray) -> np.ndarray:
        full = np.full((len(rows), 126), 100.0, dtype=np.float32)
        full[:, columns] = fit_scores(rows)
        return full

    expected = evaluate_next_item(log, fit_scores, fit_periods="train", eval_period="test")
    report = evaluate_next_item(log, full_scores, fit_periods="train", eval_period="test", chunk_size=3)
    assert report.ranks.tolist() == expected.ranks.tolist()


def test_scorer_with_a_wrong_shape_or_nan_is_refused():
    log = worked_log()
    with pytest.raises(ValueError, match="shape"):
        evaluate_next_item(log, lambda rows: np.zeros((len(rows), 7)), fit_periods="train", eval_period="test")
    with pytest.raises(ValueError, match="NaN"):
        evaluate_next_item(log, lambda rows: np.full((len(rows), 125), np.nan), fit_periods="train", eval_period="test")


def test_validation_recall_is_the_recall_of_the_evaluation_period():
    # Relabel the test period as validation: recall@10 = 6/8 as in the worked case.
    log = worked_log()
    relabelled = InteractionLog(
        log.user_codes, log.item_codes, log.timestamps, np.where(log.periods == "test", "validation", log.periods),
        log.n_users, log.n_items,
    )  # fmt: skip
    assert validation_recall(relabelled, worked_scorer(relabelled), k=10) == pytest.approx(6 / 8)


# --- pieces ----------------------------------------------------------------------------------------------------------


def test_rank_targets_breaks_score_ties_by_popularity_and_skips_excluded_columns():
    # scores 1, 2, 2, 0 with tie positions 3, 2, 1, 0 (column 3 most popular):
    #   target col 1 (score 2): col 2 has the same score and a lower tie position -> rank 2
    #   target col 2: nothing beats it -> rank 1; target col 0 (score 1): cols 1, 2 -> rank 3
    #   target col 1 with col 2 excluded -> rank 1
    scores = torch.tensor([[1.0, 2.0, 2.0, 0.0]] * 4)
    excluded = torch.zeros(4, 4, dtype=torch.bool)
    excluded[3, 2] = True
    ranks = rank_targets(
        scores, torch.tensor([1, 2, 0, 1]), tie_position=torch.tensor([3, 2, 1, 0]), excluded=excluded
    )
    assert ranks.tolist() == [2, 1, 3, 1]


def test_metric_formulas_at_the_cutoffs():
    # rank 1: ndcg 1, mrr 1; rank 10: ndcg 1/log2(11) within 10, mrr .1; rank 11: only @50/@100, mrr 1/11;
    # rank 100: only @100, mrr .01; rank 101: nothing, mrr 0.
    metrics = next_item_metrics(np.array([1, 10, 11, 100, 101]))
    assert metrics["recall@10"].tolist() == [1, 1, 0, 0, 0]
    assert metrics["recall@50"].tolist() == [1, 1, 1, 0, 0]
    assert metrics["recall@100"].tolist() == [1, 1, 1, 1, 0]
    assert metrics["ndcg@10"] == pytest.approx([1, 1 / math.log2(11), 0, 0, 0])
    assert metrics["ndcg@100"] == pytest.approx([1, 1 / math.log2(11), 1 / math.log2(12), 1 / math.log2(101), 0])
    assert metrics["mrr"] == pytest.approx([1, 0.1, 1 / 11, 0.01, 0])


def test_popularity_buckets():
    # counts of items 0..9: 10 9 8 7 6 6 5 3 1 1 (item 10 absent). head = round(.2 * 10) = 2 most popular: 0, 1.
    # tail = at most 5 interactions: items 6..9; torso: items 2..5.
    counts = [10, 9, 8, 7, 6, 6, 5, 3, 1, 1, 0]
    fit = FitItems.build(np.repeat(np.arange(11), counts), n_items=11)
    assert fit.items.tolist() == list(range(10))
    assert fit.bucket.tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert fit.column_of_item[10] == -1


def test_popularity_ties_are_broken_by_item_code():
    # counts: item 0: 1, item 1: 2, item 2: 2, item 3: 1 -> order 1, 2, 0, 3
    fit = FitItems.build(np.array([0, 1, 1, 2, 2, 3]), n_items=4)
    assert fit.tie_position.tolist() == [2, 0, 1, 3]


def test_history_is_strictly_before_and_distinct():
    # u0: item 0 at t3, items 1 and 2 at t5, item 1 again at t7 (a repeat), item 3 at t9 (rows shuffled).
    log = make_log(
        [(0, 1, 5, "train"), (0, 3, 9, "test"), (0, 0, 3, "train"), (0, 2, 5, "train"), (0, 1, 7, "test"),
         (1, 2, 4, "train")],
        n_users=2, n_items=4,
    )  # fmt: skip
    history = InteractionHistory.build(log)
    # row 0 (item 1, t5) sees only t3; row 3 (item 2, t5) too; row 4 (t7) sees {0, 1, 2}; row 1 (t9) {0, 1, 2}
    expected = [{0}, {0}, {0, 1, 2}, {0, 1, 2}, set(), set()]
    assert as_sets(history.batch_for_rows(np.array([0, 3, 4, 1, 2, 5]))) == expected
    assert history.batch_for_rows(np.array([1])).indices.tolist() == [0, 1, 2]  # item 1 once
    assert as_sets(history.batch_at(np.array([0, 1]), cutoff=7)) == [{0, 1, 2}, {2}]
    increments = history.increments_for_rows(np.array([1, 4, 0]))
    # sorted by history length: row 0 ({0}), row 4 ({0,1,2}: new 1, 2), row 1 (nothing new: item 1 repeats)
    assert increments.order.tolist() == [2, 1, 0]
    assert as_sets(increments.increments) == [{0}, {1, 2}, set()]
    assert increments.segment_start.tolist() == [0, 0, 0]


def test_time_split_cutoffs():
    # N = 10 timestamps 10, 20, ..., 100 (shuffled): cutoff_val = ts[8] = 90, cutoff_test = ts[9] = 100.
    timestamps = np.array([30, 10, 100, 20, 90, 40, 50, 80, 60, 70])
    split = TimeSplit.from_timestamps(timestamps)
    assert (split.cutoff_validation, split.cutoff_test) == (90, 100)
    assert split.periods(timestamps).tolist().count("train") == 8
    assert split.periods(np.array([89, 90, 99, 100])).tolist() == ["train", "validation", "validation", "test"]
    dates = timestamps.astype("datetime64[s]")
    assert TimeSplit.from_timestamps(dates).cutoff_test == 100 * 10**9  # datetime64 -> epoch nanoseconds


def test_unknown_period_is_named():
    with pytest.raises(ValueError, match="no period"):
        worked_log().mask("validation")


# --- cutoff protocol -------------------------------------------------------------------------------------------------


def test_cutoff_protocol_on_a_worked_case():
    # Train: u0 {0, 1}, u1 {0, 2, 3}, u2 {0, 4}: counts item 0: 3, items 1-4: 1 -> popularity order 0, 1, 2, 3, 4.
    # Test (cutoff = 10): u0 items 2, 3, 1 (in its history: dropped), 5 (not a fit item: dropped); u1 item 4.
    # u0: candidates {2, 3, 4} scored .1, 0, .5 -> 4, 2, 3: targets 2 and 3 rank 2 and 3.
    # u1: candidates {1, 4} all 0 -> 1, 4: target 4 ranks 2.
    # recall@1 = 0; recall@2: u0 1/2, u1 1 -> .75.
    # ndcg@2: u0 G3 / (G2 + G3), u1 G3 / G2; ndcg@3: u0 (G3 + G4) / (G2 + G3), u1 G3.
    log = make_log(
        [(0, 0, 1, "train"), (0, 1, 2, "train"), (1, 0, 1, "train"), (1, 2, 2, "train"), (1, 3, 3, "train"),
         (2, 0, 1, "train"), (2, 4, 2, "train"),
         (0, 2, 10, "test"), (0, 3, 11, "test"), (0, 1, 12, "test"), (0, 5, 13, "test"), (1, 4, 10, "test")],
        n_users=3, n_items=6,
    )  # fmt: skip
    table = np.zeros((3, 5), dtype=np.float32)
    table[0] = [0.0, 0.0, 0.1, 0.0, 0.5]
    report = evaluate_at_cutoff(log, lambda users: table[users], fit_periods="train", ks=(1, 2, 3))
    assert (report.n_users, report.n_targets, report.cutoff) == (2, 3, 10)
    assert report.metrics["recall@1"] == 0.0
    assert report.metrics["recall@2"] == pytest.approx(0.75)
    assert report.metrics["recall@3"] == pytest.approx(1.0)
    assert report.metrics["ndcg@2"] == pytest.approx((G3 / (G2 + G3) + G3 / G2) / 2)
    assert report.metrics["ndcg@3"] == pytest.approx(((G3 + G4) / (G2 + G3) + G3) / 2)
