"""Timestamps in a declared format -> timestamp[us, UTC]; values that do not parse, or that lie outside the range
the feature store holds (pandas and Feast keep nanoseconds in an int64: 1677-09-23 .. 2262-04-11), are counted and
reported with the first one and its row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.datasets.config import TimestampColumn

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
_EPOCH_SCALE = {"epoch_s": 1_000_000, "epoch_ms": 1_000}
_PANDAS_FORMAT = {"iso8601": "ISO8601", "date": "%Y-%m-%d"}
RANGE_START = pd.Timestamp.min.ceil("D") + pd.Timedelta(days=1)  # 1677-09-23: static rows are stamped a day earlier
RANGE_END = pd.Timestamp.max.floor("D")  # 2262-04-11
_MIN_US, _MAX_US = RANGE_START.value // 1000, RANGE_END.value // 1000
TIME_RANGE = f"{RANGE_START:%Y-%m-%d} .. {RANGE_END:%Y-%m-%d}"


def parse_timestamps(column: pa.ChunkedArray | pa.Array, spec: TimestampColumn, *, fail: Callable[[str, str], Exception]) -> pa.Array:
    """One timestamp per value; ``fail(problem, fix)`` builds the error for values that do not parse, are empty or lie
    outside :data:`TIME_RANGE`."""
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not (pa.types.is_timestamp(values.type) or pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
            or pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_null(values.type)):
        raise fail(f"holds {values.type} values, not times", "give text or epoch numbers in the declared format")
    outside = np.zeros(len(values), dtype=bool)  # (n,) parsed, but beyond what the feature store holds
    if pa.types.is_timestamp(values.type):
        parsed = _localized(values.to_pandas(), spec.timezone)
    elif spec.format in _EPOCH_SCALE:
        parsed, outside = _epoch(values, scale=_EPOCH_SCALE[spec.format])
    else:
        text = pd.Series(np.asarray(pc.utf8_trim_whitespace(pc.cast(values, pa.string())).to_numpy(zero_copy_only=False), dtype=object))
        fmt = _PANDAS_FORMAT.get(spec.format, spec.format)
        if fmt == "ISO8601":
            parsed = _iso(text, spec.timezone)
        else:
            parsed = _localized(pd.to_datetime(text, format=fmt, errors="coerce"), spec.timezone)
    result = pa.array(parsed, TIMESTAMP_TYPE, from_pandas=True) if not isinstance(parsed, pa.Array) else parsed
    bad = np.asarray(result.is_null()) & ~outside
    micros = pc.fill_null(result.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)  # (n,)
    outside |= ~bad & ((micros < _MIN_US) | (micros > _MAX_US))
    if bad.any() and not _parses_elsewhere(values[int(np.flatnonzero(bad)[0])].as_py(), spec.format):
        first = int(np.flatnonzero(bad)[0])
        raise fail(
            f"{int(bad.sum())} values do not parse as '{spec.format}' (first: {values[first].as_py()!r} on data row {first + 1})",
            "fix those values or declare the format the column uses (epoch_s, epoch_ms, iso8601, date or a strptime pattern)",
        )
    outside |= bad  # the first unparsed value is a valid date beyond the range (e.g. 9999-12-31)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise fail(
            f"{int(outside.sum())} values lie outside the time range the feature store holds ({TIME_RANGE}) "
            f"(first: {values[first].as_py()!r} on data row {first + 1})",
            "fix those values or declare the unit the column uses (epoch_s for seconds, epoch_ms for milliseconds)",
        )
    return result


def _parses_elsewhere(value: object, fmt: str) -> bool:
    """Whether a value pandas could not place in its range is a valid date for Python (years 1 .. 9999)."""
    text = str(value).strip()
    try:
        if fmt == "iso8601":
            datetime.fromisoformat(text.replace("Z", "+00:00"))
        elif fmt not in _EPOCH_SCALE:
            datetime.strptime(text, _PANDAS_FORMAT.get(fmt, fmt))
        else:
            return False
    except (ValueError, TypeError):
        return False
    return True


def _epoch(values: pa.Array, *, scale: int) -> tuple[pa.Array, np.ndarray]:
    """Epoch numbers -> timestamps (unparsable values null) and the (n,) mask of numbers beyond the range."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        text = pc.utf8_trim_whitespace(values)
        ok = pc.match_substring_regex(text, r"^[-+]?\d+(\.\d*)?$").fill_null(False)
        values = pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), pa.float64())
    numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)  # (n,)
    with np.errstate(over="ignore", invalid="ignore"):
        micros = np.round(numbers * scale)
    missing = np.isnan(micros)
    outside = ~missing & ((micros < _MIN_US) | (micros > _MAX_US))  # inf included; int64 would overflow
    safe = np.where(missing | outside, 0, micros).astype(np.int64)
    return pa.array(safe, pa.int64(), mask=missing | outside).cast(TIMESTAMP_TYPE), outside


def _iso(text: pd.Series, timezone: str) -> pd.Series:
    """ISO 8601: values with an offset (or Z) keep it; values without one are in ``timezone``."""
    has_offset = text.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True, na=False)
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")
    if has_offset.any():
        out[has_offset] = pd.to_datetime(text[has_offset], format="ISO8601", errors="coerce", utc=True)
    if (~has_offset).any():
        out[~has_offset] = _localized(pd.to_datetime(text[~has_offset], format="ISO8601", errors="coerce"), timezone)
    return out


def _localized(parsed: pd.Series, timezone: str) -> pd.Series:
    parsed = pd.Series(parsed)
    if parsed.dt.tz is None:
        return parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return parsed.dt.tz_convert("UTC")
