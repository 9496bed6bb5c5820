"""The training-set audit on hand-made joined tables: leaks, future feature rows, splits and the fingerprint."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from tower_platform.datasets.config import SplitConfig
from tower_platform.errors import TrainingSetAuditError
from tower_platform.features.training_audit import check_row_parity, first_interactions, fingerprint
from tower_platform.features.training_set import assign_split, audit_training_set

T0 = datetime(2021, 5, 1, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")


def _table(recent: list[list[str] | None]) -> pa.Table:
    # u1 meets x at T0 and again at T0 + 2h (a genuine repeat); u1 meets y at T0 + 1h
    return pa.table(
        {
            "row_id": pa.array([0, 1, 2], pa.int64()),
            "user_id": ["u1", "u1", "u1"],
            "item_id": ["x", "y", "x"],
            "event_timestamp": pa.array([T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)], TS),
            "split": ["train", "train", "test"],
            "user_history__recent_items": pa.array(recent, pa.list_(pa.string())),
        }
    )


def _audit(table: pa.Table, snapshots: dict[str, pa.Array] | None = None):
    return audit_training_set(
        table,
        snapshots=snapshots or {},
        rows_in=3,
        first_seen=first_interactions(table),
        feature_services=("query_features", "item_features"),
        time_window=None,
        recent_items="user_history__recent_items",
    )


def test_clean_table_passes_and_a_genuine_repeat_is_not_a_leak():
    report = _audit(_table([None, ["x"], ["y", "x"]]))  # row 2 targets x, met at T0 < T0 + 2h
    assert report.passed and report.leaked_rows == 0
    assert report.null_rates == {"user_history__recent_items": pytest.approx(1 / 3)}
    assert report.split_sizes == {"train": 2, "validation": 0, "test": 1}
    assert report.to_dict()["passed"] is True


def test_a_leaking_snapshot_is_caught():
    # row 1 targets y and its recent items already hold y, but u1 first met y at that very row
    with pytest.raises(TrainingSetAuditError, match="1 rows hold their target item"):
        _audit(_table([None, ["y", "x"], ["y", "x"]]))


def test_a_feature_row_at_or_after_its_event_is_caught():
    snapshot = pa.array([None, T0 + timedelta(hours=1), T0], TS)  # row 1 uses a row stamped at its own event
    with pytest.raises(TrainingSetAuditError, match="1 rows use a 'user_history' feature row"):
        _audit(_table([None, ["x"], ["y", "x"]]), {"user_history": snapshot})


def test_row_parity():
    check_row_parity(rows_in=3, row_ids=pa.array([2, 0, 1]), service="s")
    with pytest.raises(TrainingSetAuditError, match="returned 2 rows for 3"):
        check_row_parity(rows_in=3, row_ids=pa.array([0, 1]), service="s")
    with pytest.raises(TrainingSetAuditError):
        check_row_parity(rows_in=3, row_ids=pa.array([0, 1, 1]), service="s")


def test_fingerprint_depends_on_content_services_and_window_not_on_chunking():
    table = _table([None, ["x"], ["y", "x"]])
    base = fingerprint(table, feature_services=("a",), time_window=(None, None))
    rechunked = pa.concat_tables([table.slice(0, 1), table.slice(1)])
    assert fingerprint(rechunked, feature_services=("a",), time_window=(None, None)) == base
    assert fingerprint(table, feature_services=("b",), time_window=(None, None)) != base
    assert fingerprint(table, feature_services=("a",), time_window=("2021", None)) != base
    changed = _table([None, ["x"], ["x", "y"]])
    assert fingerprint(changed, feature_services=("a",), time_window=(None, None)) != base


def test_global_time_split_follows_the_evaluation_protocol():
    # 10 interactions at hours 0..9: cutoff_val = ts[floor(0.8 * 10)] = 8h, cutoff_test = ts[9] = 9h
    table = pa.table(
        {"user_id": ["u"] * 10, "event_timestamp": pa.array([T0 + timedelta(hours=h) for h in range(10)], TS)}
    )
    labels, info = assign_split(table, SplitConfig())
    assert labels.to_pylist() == ["train"] * 8 + ["validation", "test"]
    assert (info.validation_cutoff, info.test_cutoff) == (T0 + timedelta(hours=8), T0 + timedelta(hours=9))


def test_leave_last_out_split():
    # u: 4 interactions (last two held out), v: 2 interactions (all train)
    hours = [3, 0, 2, 1, 5, 4]
    table = pa.table(
        {
            "user_id": ["u", "u", "u", "u", "v", "v"],
            "event_timestamp": pa.array([T0 + timedelta(hours=h) for h in hours], TS),
        }
    )
    labels, info = assign_split(table, SplitConfig(method="leave_last_out"))
    assert labels.to_pylist() == ["test", "train", "validation", "train", "train", "train"]
    assert info.sizes == {"train": 4, "validation": 1, "test": 1}
