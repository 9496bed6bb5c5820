"""Constructed cases for point-in-time correctness, TTL, leakage and parity with Feast's own DuckDB join."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tower_platform.datasets import layout
from tower_platform.errors import TrainingSetAuditError
from tower_platform.features.training_set import build_training_set

DAY = 86_400
T = 1_600_000_000  # 2020-09-13 12:26:40 UTC
MOVIES = [("10", "Alpha (1990)", "Drama"), ("20", "Beta (1991)", "Comedy|Drama"), ("30", "Gamma (1992)", "Action"),
          ("40", "Delta (1993)", "Action")]  # fmt: skip
# user 1: 10 at T, 20 and 30 together at T + 60 s, 40 at T + 120 s.  user 2: 10 at T, then 20 ten days later.
RATINGS = [("1", "10", 4.0, T), ("1", "20", 3.0, T + 60), ("1", "30", 5.0, T + 60), ("1", "40", 2.0, T + 120),
           ("2", "10", 1.0, T), ("2", "20", 2.0, T + 10 * DAY)]  # fmt: skip


def _rows(training_set) -> dict[tuple[str, str], dict]:
    return {(r["user_id"], r["item_id"]): r for r in training_set.table.to_pylist()}


@pytest.fixture
def tiny(make_feature_home):
    # user_history expires after 1 day: user 2's second interaction finds no snapshot within TTL
    return make_feature_home(ratings=RATINGS, movies=MOVIES, config_extra="features: {ttl_days: {user_history: 1}}\n")


def test_constructed_cases(tiny):
    config, store = tiny
    training_set = build_training_set(store, config)
    rows = _rows(training_set)
    assert training_set.table.num_rows == len(RATINGS)

    # a later feature row exists (the snapshot at T + 60 s) and must not be used for the row at T + 60 s
    assert rows[("1", "20")]["user_history__recent_items"] == ["10"]
    assert rows[("1", "20")]["user_history__n_interactions"] == 1
    # two interactions at the same timestamp: both rows come back and neither sees the other
    assert rows[("1", "30")]["user_history__recent_items"] == ["10"]
    # the next row sees both, most recent first (ties: later file row first; the file is sorted by item id)
    assert rows[("1", "40")]["user_history__recent_items"] == ["30", "20", "10"]
    # first interaction of a user: no snapshot at all -> row kept, features null
    assert rows[("1", "10")]["user_history__recent_items"] is None
    # user 2 came back after 10 days: the snapshot of T is beyond the 1-day TTL -> row kept, features null
    assert rows[("2", "20")]["user_history__recent_items"] is None
    assert rows[("2", "20")]["user_history__n_interactions"] is None
    # item features are static: every row has them
    assert rows[("2", "20")]["item_profile__genres"] == ["Comedy", "Drama"]
    # item stats are daily: on the first day nothing is counted yet; 10 days later item 20 has one earlier rating
    assert rows[("1", "20")]["item_stats__interaction_count"] == 0
    assert rows[("2", "20")]["item_stats__interaction_count"] == 1


def test_a_leaking_snapshot_fails_the_audit(tiny):
    config, store = tiny
    path = layout.source_path(store.home_dir, layout.USER_HISTORY)
    table = pq.read_table(path)
    # Corrupt user 1's snapshot at T: its recent items now claim item 40, which user 1 only meets at T + 120 s.
    recent = table.column("recent_items").to_pylist()
    first = next(i for i, (u, ts) in enumerate(zip(table.column("user_id").to_pylist(), table.column("event_timestamp").to_pylist())) if u == "1" and ts.timestamp() == T)
    recent[first] = ["40", "10"]
    table = table.set_column(table.column_names.index("recent_items"), "recent_items", pa.array(recent, pa.list_(pa.string())))
    # ... and stretch it forward in time so the row at T + 120 s uses it: drop user 1's later snapshots
    keep = [not (u == "1" and ts.timestamp() > T) for u, ts in zip(table.column("user_id").to_pylist(), table.column("event_timestamp").to_pylist())]
    pq.write_table(table.filter(pa.array(keep)), path)
    with pytest.raises(TrainingSetAuditError, match="hold their target item"):
        build_training_set(store, config)


def test_a_feature_row_stamped_after_its_snapshot_time_fails_the_audit(tiny):
    config, store = tiny
    path = layout.source_path(store.home_dir, layout.ITEM_PROFILE)
    table = pq.read_table(path)
    # Claim every profile row was computed far in the future while Feast still joins it on event_timestamp.
    future = pa.array([T + 365 * DAY] * table.num_rows, pa.int64()).cast(pa.timestamp("s")).cast(pa.timestamp("us", tz="UTC"))
    pq.write_table(table.set_column(table.column_names.index("snapshot_ts"), "snapshot_ts", future), path)
    with pytest.raises(TrainingSetAuditError, match="'item_profile' feature row not older"):
        build_training_set(store, config)


def test_asof_store_matches_feasts_duckdb_join(tiny, tmp_path):
    config, store = tiny
    stock_repo = tmp_path / "stock_repo"
    shutil.copytree(store.repo_dir, stock_repo, ignore=shutil.ignore_patterns("__pycache__"))
    yaml_path = stock_repo / "feature_store.yaml"
    text = yaml_path.read_text()
    assert "AsofDuckDBOfflineStore" in text
    yaml_path.write_text(text.replace("type: tower_platform.features.offline_store.AsofDuckDBOfflineStore", "type: duckdb"))
    from tower_platform.features.store import FeastFeatureStore

    stock = FeastFeatureStore(stock_repo, home_dir=store.home_dir)
    ours = build_training_set(store, config)
    theirs = build_training_set(stock, config)
    assert ours.table.equals(theirs.table)
    assert ours.fingerprint == theirs.fingerprint


def test_derived_features_through_feast_as_of_each_event(make_feature_home):
    # windows, top values, time since the previous interaction and days since the first, read as of event - 1 µs
    extra = (
        "features:\n"
        "  query:\n"
        "    n_all: {type: count}\n"
        "    n_1d: {type: count, window_days: 1}\n"
        "    top: {type: top_values, attribute: genres, k: 1}\n"
        "    since_previous: {type: time_since_previous, unit: hours}\n"
        "    since_first: {type: days_since_first}\n"
        "    n_fresh: {type: count, ttl_days: 1}\n"
        "  item:\n"
        "    trend_1d: {type: count, window_days: 1}\n"
    )
    config, store = make_feature_home(ratings=RATINGS, movies=MOVIES, config_extra=extra)
    rows = _rows(build_training_set(store, config))
    # user 1 at T + 60 s (two rows at one timestamp): both see only the interaction at T, 60 s (1/60 h) earlier
    for item in ("20", "30"):
        assert rows[("1", item)]["user_history__n_all"] == 1
        assert rows[("1", item)]["user_history__since_previous"] == pytest.approx(60 / 3600 - 1e-6 / 3600)
        assert rows[("1", item)]["user_history__top"] == ["Drama"]
    # at T + 120 s: three before it (Drama 2, Comedy 1, Action 1), the previous one 60 s back, the first 120 s back
    assert rows[("1", "40")]["user_history__n_all"] == 3
    assert rows[("1", "40")]["user_history__top"] == ["Drama"]
    assert rows[("1", "40")]["user_history__since_previous"] == pytest.approx(60 / 3600, abs=1e-6)
    assert rows[("1", "40")]["user_history__since_first"] == pytest.approx(120 / DAY, abs=1e-9)
    # user 2 ten days later: the 1-day window as of the snapshot at T holds that interaction; elapsed time is 10 days
    assert rows[("2", "20")]["user_history__n_1d"] == 1
    assert rows[("2", "20")]["user_history__since_previous"] == pytest.approx(240, abs=1e-6)
    # a feature with its own TTL lives in its own view: 10 days later its 1-day TTL has expired, the others have not
    assert rows[("1", "40")]["user_history_ttl1d__n_fresh"] == 3
    assert rows[("2", "20")]["user_history_ttl1d__n_fresh"] is None
    assert rows[("2", "20")]["user_history__n_all"] == 1
    # first interactions: no snapshot, nulls
    assert rows[("1", "10")]["user_history__since_previous"] is None
    # item 20 ten days later: its day-0 purchase has left the 1-day window
    assert rows[("2", "20")]["item_stats__trend_1d"] == 0
    assert rows[("1", "20")]["item_stats__trend_1d"] == 0  # nothing counted on its first day


# Item 10 over 35 days (T is 12:26 UTC on day 0; item stats are stamped at day boundaries and count the days before
# the event's day): users 1..6 rate it on days 0, 3, 20, 22, 35 and again on day 35, 60 s later.
RECENCY_RATINGS = [("1", "10", 4.0, T), ("2", "10", 3.0, T + 3 * DAY), ("3", "10", 5.0, T + 20 * DAY),
                   ("4", "10", 2.0, T + 22 * DAY), ("5", "10", 4.0, T + 35 * DAY), ("6", "10", 1.0, T + 35 * DAY + 60),
                   ("3", "20", 3.0, T + 20 * DAY + 3600), ("3", "30", 3.0, T + 29 * DAY)]  # fmt: skip


def test_the_bundled_recency_signals_as_of_each_event(make_feature_home):
    # the bundled config's own declarations (tiny_movielens_config copies its features section)
    from tower_platform.paths import bundled_config
    import yaml

    declared = yaml.safe_load(bundled_config().read_text(encoding="utf-8"))["features"]
    assert declared["item"]["interactions_7d"] == {"type": "count", "window_days": 7}
    assert declared["item"]["interactions_30d"] == {"type": "count", "window_days": 30}
    assert declared["item"]["days_since_first"] == {"type": "days_since_first"}
    assert declared["query"]["days_since_previous"] == {"type": "time_since_previous", "unit": "days"}

    config, store = make_feature_home(ratings=RECENCY_RATINGS, movies=MOVIES)
    rows = _rows(build_training_set(store, config))
    stats = {user: (rows[(user, "10")]["item_stats__interaction_count"], rows[(user, "10")]["item_stats__interactions_7d"],
                    rows[(user, "10")]["item_stats__interactions_30d"]) for user in "123456"}  # fmt: skip
    # (all time, 7 days, 30 days) of the days before the event's day
    assert stats["1"] == (0, 0, 0)  # day 0: nothing before it
    assert stats["2"] == (1, 1, 1)  # day 3: day 0 is within both windows
    assert stats["3"] == (2, 0, 2)  # day 20: days 0 and 3 left the 7-day window, not the 30-day one
    assert stats["4"] == (3, 1, 3)  # day 22: day 20 in both
    assert stats["5"] == (4, 0, 2)  # day 35: 7 days back is day 28; 30 days back is day 5 (days 20, 22 remain)
    assert stats["6"] == stats["5"]  # the same day, 60 s later: user 5's rating of that day is not counted yet
    # item age as of each event: first rated at T, so 3 days at day 3 and 20 days (+ 1 h for item 20's row) later
    assert rows[("1", "10")]["item_stats__days_since_first"] is None  # its first interaction: no age yet
    assert rows[("2", "10")]["item_stats__days_since_first"] == pytest.approx(3.0, abs=1e-9)
    assert rows[("3", "10")]["item_stats__days_since_first"] == pytest.approx(20.0, abs=1e-9)
    assert rows[("3", "20")]["item_stats__days_since_first"] is None  # item 20's first interaction
    # time since the user's previous interaction, as of each event: user 3 at day 20 (none), + 1 h, then day 29
    assert rows[("3", "10")]["user_history__days_since_previous"] is None
    assert rows[("3", "20")]["user_history__days_since_previous"] == pytest.approx(1 / 24, abs=1e-9)
    assert rows[("3", "30")]["user_history__days_since_previous"] == pytest.approx(9 - 1 / 24, abs=1e-9)
