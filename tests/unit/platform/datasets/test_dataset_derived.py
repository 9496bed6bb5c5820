"""Derived point-in-time features on hand-made interactions (expected values worked out in the comments).

A snapshot stamped at t holds the user's interactions with timestamp <= t; a training row reads as of (event - 1 µs),
so it sees the snapshot of the user's previous timestamp, never its own nor one at the same timestamp.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from tower_platform.datasets import derived
from tower_platform.datasets.config import ItemFeature, QueryFeature
from tower_platform.datasets.derived import build_item_stats, build_user_history

T0 = datetime(2020, 1, 1, 12, tzinfo=timezone.utc)
T0_S = T0.timestamp()


def _interactions(rows: list[tuple[str, str, float, float | None]]) -> pa.Table:
    """rows: (user, item, hours after T0, rating)."""
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_timestamp": pa.array([T0 + timedelta(hours=r[2]) for r in rows], pa.timestamp("us", tz="UTC")),
            "rating": pa.array([r[3] for r in rows], pa.float64()),
        }
    )


ITEMS = pa.table(
    {
        "item_id": ["a", "b", "c", "d"],
        "genres": pa.array([["Drama"], ["Comedy", "Drama"], ["Action"], []], pa.list_(pa.string())),
        "shelf": pa.array(["s1", "s2", None, "s1"]),
    }
)
QUERY = {
    "recent": QueryFeature(type="recent_items", length=3),
    "top_genres": QueryFeature(type="top_values", attribute="genres", k=2),
    "top_shelf": QueryFeature(type="top_values", attribute="shelf", k=1),
    "n_all": QueryFeature(type="count"),
    "n_7d": QueryFeature(type="count", window_days=7),
    "n_30d": QueryFeature(type="count", window_days=30),
    "mean_rating": QueryFeature(type="mean", column="rating"),
    "first_at": QueryFeature(type="days_since_first"),
    "previous_at": QueryFeature(type="time_since_previous", unit="hours"),
}


def _rows(table: pa.Table, user: str) -> list[dict]:
    return [r for r in table.to_pylist() if r["user_id"] == user]


def test_query_snapshots_per_distinct_timestamp():
    # user u: a@0h, b@1h, c@1h (same time as b), a@200h (a repeat, 8.3 days later), d@1201h (50 days later)
    table = _interactions(
        [("u", "a", 0, 4.0), ("u", "b", 1, 2.0), ("u", "c", 1, None), ("u", "a", 200, 5.0), ("u", "d", 1201, 3.0),
         ("v", "c", 5, 1.0)]
    )
    rows = _rows(build_user_history(table, ITEMS, QUERY), "u")
    # one snapshot per distinct timestamp of u: b and c share 1h, so they share one snapshot
    assert [r["event_timestamp"] - T0 for r in rows] == [timedelta(hours=h) for h in (0, 1, 200, 1201)]
    assert all(r["snapshot_ts"] == r["event_timestamp"] for r in rows)
    # distinct recent items, most recent first; at one timestamp the later input row first; a repeat moves forward
    assert [r["recent"] for r in rows] == [["a"], ["c", "b", "a"], ["a", "c", "b"], ["d", "a", "c"]]
    assert [r["n_all"] for r in rows] == [1, 3, 4, 5]
    # windows (t - W, t] at each snapshot: at 200h the 7-day window holds only a@200h (0h and 1h are 8.3 days back)
    assert [r["n_7d"] for r in rows] == [1, 3, 1, 1]
    assert [r["n_30d"] for r in rows] == [1, 3, 4, 1]
    # ratings so far: 4 | 4,2 (c unrated) | 4,2,5 | 4,2,5,3
    assert [round(r["mean_rating"], 6) for r in rows] == [4.0, 3.0, round(11 / 3, 6), 3.5]
    # elapsed-time features store the epoch seconds of their reference interaction (the reads subtract)
    assert [r["first_at"] for r in rows] == [T0_S] * 4
    assert [r["previous_at"] for r in rows] == [T0_S + h * 3600 for h in (0, 1, 200, 1201)]
    # genre counts at 1h: Drama 2 (a, b), Comedy 1, Action 1 -> Drama, then Action before Comedy by name
    assert [r["top_genres"] for r in rows] == [["Drama"], ["Drama", "Action"], ["Drama", "Action"], ["Drama", "Action"]]
    # shelves: a s1, b s2, c none; at 1h s1 and s2 tie at 1 -> s1 by name; at 200h s1 has 2
    assert [r["top_shelf"] for r in rows] == [["s1"], ["s1"], ["s1"], ["s1"]]


def test_top_values_leave_out_zero_counts_and_follow_the_counts():
    # w: d (no genres), then c (Action), b (Comedy, Drama), b again at a later time: Drama 2? no: b twice -> Comedy 2, Drama 2
    table = _interactions([("w", "d", 0, None), ("w", "c", 1, None), ("w", "b", 2, None), ("w", "b", 3, None)])
    rows = _rows(build_user_history(table, ITEMS, {"g": QueryFeature(type="top_values", attribute="genres", k=2)}), "w")
    assert [r["g"] for r in rows] == [[], ["Action"], ["Action", "Comedy"], ["Comedy", "Drama"]]


def test_top_values_in_small_blocks_match_one_block(monkeypatch):
    rows = [(f"u{i % 7}", "abcd"[(i * 5) % 4], i, None) for i in range(60)]
    feature = {"g": QueryFeature(type="top_values", attribute="genres", k=2)}
    whole = build_user_history(_interactions(rows), ITEMS, feature).column("g").to_pylist()
    monkeypatch.setattr(derived, "PAIR_BUDGET", 3)
    assert build_user_history(_interactions(rows), ITEMS, feature).column("g").to_pylist() == whole


def test_recent_items_with_many_repeats_finds_the_distinct_ones_beyond_the_first_window():
    # x, y, then x repeated 10 times: with N = 2 the answer [x, y] lies 11 rows back
    rows = [("u", "x", 0, 1.0), ("u", "y", 1, 1.0)] + [("u", "x", 2 + i, 1.0) for i in range(10)]
    snaps = build_user_history(_interactions(rows), ITEMS, {"r": QueryFeature(type="recent_items", length=2)}).to_pylist()
    assert snaps[-1]["r"] == ["x", "y"]
    assert snaps[1]["r"] == ["y", "x"]


def test_item_stats_count_only_days_before_the_boundary_and_windows_decay():
    # item a: two ratings on day 0 (4, 2), one on day 2 (3); item b never rated
    table = _interactions([("u", "a", 0, 4.0), ("v", "a", 1, 2.0), ("u", "a", 48, 3.0)])
    stamp = int((T0 - timedelta(days=2)).timestamp() * 1e6)
    features = {
        "count": ItemFeature(type="count"),
        "trend_2d": ItemFeature(type="count", window_days=2),
        "mean_rating": ItemFeature(type="mean", column="rating"),
        "first_at": ItemFeature(type="days_since_first"),
    }
    stats = build_item_stats(table, pa.array(["a", "b"]), features, stamp=stamp).to_pylist()
    by_item: dict[str, list] = {}
    for row in stats:
        by_item.setdefault(row["item_id"], []).append(row)
    day0 = datetime(2020, 1, 1, tzinfo=timezone.utc)
    # rows only where a value changes: day 1 and day 3 (after the active days 0 and 2); day 3 and day 5, when those
    # days leave the 2-day window [b - 2 days, b)
    assert [(r["event_timestamp"], r["count"], r["trend_2d"], r["mean_rating"]) for r in by_item["a"]] == [
        (T0 - timedelta(days=2), 0, 0, None),
        (day0 + timedelta(days=1), 2, 2, 3.0),  # the two of day 0, mean (4 + 2) / 2
        (day0 + timedelta(days=3), 3, 1, 3.0),  # window days 1-2: day 0 has left it; mean (4 + 2 + 3) / 3
        (day0 + timedelta(days=5), 3, 0, 3.0),  # window days 3-4: nothing recent
    ]
    assert [r["first_at"] for r in by_item["a"]] == [None] + [T0_S] * 3
    assert [(r["count"], r["trend_2d"], r["mean_rating"]) for r in by_item["b"]] == [(0, 0, None)]


@pytest.mark.parametrize("window", [None, 7, 30])
def test_counts_at_equal_timestamps_include_the_whole_group(window):
    # a basket: three purchases at one timestamp form one snapshot with all three counted
    table = _interactions([("u", "a", 0, None), ("u", "b", 0, None), ("u", "c", 0, None), ("u", "d", 24 * 40, None)])
    rows = _rows(build_user_history(table, ITEMS, {"n": QueryFeature(type="count", window_days=window)}), "u")
    assert [r["n"] for r in rows] == [3, 4 if window is None else 1]


def test_top_values_memory_grows_with_the_data_not_rows_times_values():
    # 60,000 interactions over 4,000 values: a rows x values count matrix would need 60,000 x 4,000 x 8 B = 1.9 GB
    import tracemalloc

    import numpy as np

    rng = np.random.default_rng(0)
    n, n_items, n_values = 60_000, 8_000, 4_000
    items = pa.table({"item_id": [f"i{i}" for i in range(n_items)], "cat": [f"c{i % n_values}" for i in range(n_items)]})
    table = pa.table(
        {
            "user_id": pa.array([f"u{u}" for u in rng.integers(0, 3_000, n)]),
            "item_id": pa.array([f"i{i}" for i in rng.integers(0, n_items, n)]),
            "event_timestamp": pa.array(rng.integers(0, 10**12, n), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    tracemalloc.start()
    snaps = build_user_history(table, items, {"top": QueryFeature(type="top_values", attribute="cat", k=3)})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert snaps.num_rows == n and peak < 200 * 2**20  # about 50 MiB measured
