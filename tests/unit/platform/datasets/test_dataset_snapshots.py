"""User-history and item-stats snapshots on hand-made interactions (expected values worked out in comments)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa

from tower_platform.datasets.source_tables import build_item_stats
from tower_platform.datasets.user_history import build_user_history

T0 = datetime(2020, 1, 1, 12, tzinfo=timezone.utc)


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


PROFILE = pa.table(
    {
        "item_id": ["a", "b", "c", "d"],
        "genres": pa.array([["Drama"], ["Comedy", "Drama"], ["Action"], []], pa.list_(pa.string())),
    }
)


def test_snapshots_per_distinct_timestamp_with_distinct_recent_items():
    # user u: a@0h, b@1h, c@1h (same time as b), a@50 days (a repeat), d@50 days + 1h (no genres)
    table = _interactions(
        [("u", "a", 0, 4.0), ("u", "b", 1, 2.0), ("u", "c", 1, None), ("u", "a", 1200, 5.0), ("u", "d", 1201, 3.0),
         ("v", "c", 5, 1.0)]
    )
    snaps = build_user_history(table, PROFILE, recent_items=3, top_genres=2)
    rows = [r for r in snaps.to_pylist() if r["user_id"] == "u"]
    # one snapshot per distinct timestamp of u: 0h, 1h, 1200h, 1201h
    assert [r["event_timestamp"] - T0 for r in rows] == [timedelta(hours=h) for h in (0, 1, 1200, 1201)]
    assert all(r["snapshot_ts"] == r["event_timestamp"] for r in rows)
    # recent items, most recent first; b and c share 1h (later input row first); the repeat of a moves it forward
    assert [r["recent_items"] for r in rows] == [["a"], ["c", "b", "a"], ["a", "c", "b"], ["d", "a", "c"]]
    assert [r["n_interactions"] for r in rows] == [1, 3, 4, 5]
    # 30-day window (t - 30d, t]: at 1201h only a@1200h and d@1201h
    assert [r["n_interactions_30d"] for r in rows] == [1, 3, 1, 2]
    # ratings so far: 4 | 4,2 (c unrated) | 4,2,5 | 4,2,5,3
    assert [round(r["mean_rating"], 6) for r in rows] == [4.0, 3.0, round(11 / 3, 6), 3.5]
    assert [r["days_since_first"] for r in rows] == [0.0, 1 / 24, 50.0, 1201 / 24]
    # genre counts at 1h: Drama 2 (a, b), Comedy 1, Action 1 -> Drama, then Action before Comedy by name
    assert rows[1]["top_genres"] == ["Drama", "Action"]
    assert rows[0]["top_genres"] == ["Drama"]  # zero counts are left out


def test_a_user_whose_items_have_no_genres_gets_empty_top_genres():
    snaps = build_user_history(_interactions([("w", "d", 0, 3.0)]), PROFILE, recent_items=3, top_genres=2)
    assert snaps.to_pylist()[0]["top_genres"] == []


def test_recent_items_with_many_repeats_finds_the_distinct_ones_beyond_the_first_window():
    # x, y, then x repeated 10 times: with N = 2 the answer [x, y] lies 11 rows back
    rows = [("u", "x", 0, 1.0), ("u", "y", 1, 1.0)] + [("u", "x", 2 + i, 1.0) for i in range(10)]
    snaps = build_user_history(_interactions(rows), PROFILE, recent_items=2, top_genres=1).to_pylist()
    assert snaps[-1]["recent_items"] == ["x", "y"]
    assert snaps[1]["recent_items"] == ["y", "x"]


def test_item_stats_count_only_days_before_the_boundary():
    # item a: two ratings on day 0 (4, 2), one on day 2 (3); item b never rated
    table = _interactions([("u", "a", 0, 4.0), ("v", "a", 1, 2.0), ("u", "a", 48, 3.0)])
    stamp = int((T0 - timedelta(days=2)).timestamp() * 1e6)
    stats = build_item_stats(table, pa.array(["a", "b"]), stamp=stamp).to_pylist()
    by_item = {}
    for row in stats:
        by_item.setdefault(row["item_id"], []).append(row)
    day0 = datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert [(r["event_timestamp"], r["interaction_count"], r["mean_rating"]) for r in by_item["a"]] == [
        (T0 - timedelta(days=2), 0, None),
        (day0 + timedelta(days=1), 2, 3.0),  # stamped at the end of day 0: (4 + 2) / 2
        (day0 + timedelta(days=3), 3, 3.0),  # (4 + 2 + 3) / 3
    ]
    assert [(r["interaction_count"], r["mean_rating"]) for r in by_item["b"]] == [(0, None)]
