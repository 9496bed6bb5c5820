"""The bundled dataset end to end: ingest -> apply -> materialize -> point-in-time training set -> audit."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow.compute as pc

from tower_platform.datasets import layout

RECENT = "user_history__recent_items"


def test_one_row_per_interaction_sorted_by_row_id_and_audited(training_set, ingested):
    table = training_set.table
    assert table.num_rows == ingested.rows["interactions"] == training_set.audit.rows_out
    assert table.column("row_id").to_pylist() == list(range(table.num_rows))
    assert training_set.audit.passed
    assert sum(training_set.audit.future_rows.values()) == 0
    # the config declares a rating: it is an interaction value, after the base columns
    assert table.column_names[:7] == ["row_id", "user_id", "item_id", "event_timestamp", "weight", "rating", "split"]
    assert not any(c.endswith("__snapshot_ts") for c in table.column_names)


def test_recent_items_are_the_distinct_items_strictly_before_each_event(training_set, feature_store):
    # Recompute the history of 300 random rows from the raw interactions, independently of the snapshots.
    interactions = feature_store.read_source(layout.INTERACTIONS).to_pandas()
    frame = training_set.table.select(["user_id", "event_timestamp", RECENT]).to_pandas()
    rng = np.random.default_rng(7)
    for row in frame.iloc[rng.choice(len(frame), 300, replace=False)].itertuples():
        before = interactions[(interactions.user_id == row.user_id) & (interactions.event_timestamp < row.event_timestamp)]
        if before.empty:
            assert row[3] is None  # no earlier interaction: no snapshot, null feature
            continue
        expected = list(dict.fromkeys(before.item_id.iloc[::-1]))[:20]  # file order is time order
        assert list(row[3]) == expected


def test_split_uses_the_global_cutoffs_of_the_protocol(training_set):
    ts = np.sort(pc.cast(training_set.table.column("event_timestamp"), "int64").to_numpy())
    n = len(ts)
    split = training_set.split
    assert int(split.validation_cutoff.timestamp() * 1_000_000) == ts[int(np.floor(0.8 * n))]
    assert int(split.test_cutoff.timestamp() * 1_000_000) == ts[int(np.floor(0.9 * n))]
    assert sum(split.sizes.values()) == n
    assert split.sizes == training_set.audit.split_sizes


def test_feature_schema_matches_the_table(training_set):
    schema = training_set.schema
    names = [f.name for f in schema.features]
    assert set(names) - {"item_id"} <= set(training_set.table.column_names)
    recent = next(f for f in schema.query if f.name == RECENT)
    assert (recent.kind, recent.vocab_group, recent.max_len) == ("multi_categorical", "item_id", 20)
    assert schema.item[0].name == "item_id" and schema.item[0].vocab_group == "item_id"
    assert schema.item_category == "item_profile__category"
    assert schema.metadata["query_service"] == "query_features"


def test_fingerprint_is_stable_across_builds(training_set, feature_store, bundled_dataset):
    from tower_platform.features.training_set import build_training_set

    again = build_training_set(feature_store, bundled_dataset)
    assert again.fingerprint == training_set.fingerprint
    window = (datetime(2017, 1, 1, tzinfo=timezone.utc), None)
    windowed = build_training_set(feature_store, bundled_dataset, time_window=window)
    assert windowed.fingerprint != training_set.fingerprint
    assert windowed.table.num_rows < training_set.table.num_rows
    assert pc.min(windowed.table.column("event_timestamp")).as_py() >= window[0]


def test_item_corpus_has_every_item_once_with_features_as_of_a_time(feature_store, ingested):
    corpus = feature_store.item_corpus(datetime(2000, 1, 1, tzinfo=timezone.utc))
    assert corpus.num_rows == ingested.rows["item_profile"]
    assert len(pc.unique(corpus.column("item_id"))) == corpus.num_rows
    assert "item_profile__category" in corpus.column_names
    counts = dict(zip(corpus.column("item_id").to_pylist(), corpus.column("item_stats__interaction_count").to_pylist()))
    assert counts["1"] > 0  # Toy Story was rated before 2000
    assert min(counts.values()) == 0  # items first rated later still have their zero row


def test_online_features_serve_the_latest_snapshot(feature_store):
    snapshots = feature_store.read_source(layout.USER_HISTORY).to_pandas()
    latest = snapshots[snapshots.user_id == "1"].sort_values("event_timestamp").iloc[-1]
    online = feature_store.online_features("query_features", [{"user_id": "1"}, {"user_id": "no-such-user"}])
    assert online[RECENT][0] == list(latest.recent_items)
    assert online["user_history__n_interactions"] == [int(latest.n_interactions), None]
