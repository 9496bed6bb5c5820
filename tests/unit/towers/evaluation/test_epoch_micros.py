"""Arrow timestamps as epoch microseconds: one helper, shared by the evaluation protocol and the alignment monitor."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from towers.evaluation import epoch_micros


def test_every_unit_and_zone_becomes_utc_microseconds():
    moment = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    micros = 1_704_164_645_678_901  # 2024-01-02T03:04:05.678901Z: 19,724 days * 86,400 s + 11,045 s, then µs
    assert int(moment.timestamp() * 1_000_000) == micros
    for kind in (pa.timestamp("us", tz="UTC"), pa.timestamp("us", tz="Europe/Paris"), pa.timestamp("ns", tz="UTC"),
                 pa.timestamp("us")):
        column = pa.chunked_array([pa.array([moment], pa.timestamp("us", tz="UTC")).cast(kind)])
        assert epoch_micros(column).tolist() == [micros], kind
    seconds = pa.chunked_array([pa.array([moment.replace(microsecond=0)], pa.timestamp("s", tz="UTC"))])
    assert epoch_micros(seconds).tolist() == [micros - 678_901]


def test_integer_columns_are_taken_as_they_are_across_chunks():
    column = pa.chunked_array([pa.array([1, 2], pa.int64()), pa.array([3], pa.int64())])
    result = epoch_micros(column)
    assert result.dtype == np.int64 and result.tolist() == [1, 2, 3]


def test_the_monitor_and_the_protocol_share_the_one_helper():
    from tower_platform.monitor import inputs
    from towers.evaluation import protocol

    assert inputs.epoch_micros is protocol.epoch_micros is epoch_micros
    assert not hasattr(inputs, "_epoch_micros") and not hasattr(protocol, "_epoch_micros")
