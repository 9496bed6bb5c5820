"""Timestamps in a declared format -> timestamp[us, UTC]; values that do not parse are counted and reported."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.datasets.config import TimestampColumn

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
_EPOCH_SCALE = {"epoch_s": 1_000_000, "epoch_ms": 1_000}
_PANDAS_FORMAT = {"iso8601": "ISO8601", "date": "%Y-%m-%d"}


def parse_timestamps(column: pa.ChunkedArray | pa.Array, spec: TimestampColumn, *, fail: Callable[[str, str], Exception]) -> pa.Array:
    """One timestamp per value; ``fail(problem, fix)`` builds the error for values that do not parse or are empty."""
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_timestamp(values.type):
        parsed = _localized(values.to_pandas(), spec.timezone)
    elif spec.format in _EPOCH_SCALE:
        parsed = _epoch(values, scale=_EPOCH_SCALE[spec.format])
    else:
        text = pd.Series(np.asarray(pc.utf8_trim_whitespace(pc.cast(values, pa.string())).to_numpy(zero_copy_only=False), dtype=object))
        fmt = _PANDAS_FORMAT.get(spec.format, spec.format)
        if fmt == "ISO8601":
            parsed = _iso(text, spec.timezone)
        else:
            parsed = _localized(pd.to_datetime(text, format=fmt, errors="coerce"), spec.timezone)
    result = pa.array(parsed, TIMESTAMP_TYPE, from_pandas=True) if not isinstance(parsed, pa.Array) else parsed
    bad = np.asarray(result.is_null())
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise fail(
            f"{int(bad.sum())} values do not parse as '{spec.format}' (first: {values[first].as_py()!r} on data row {first + 1})",
            "fix those values or declare the format the column uses (epoch_s, epoch_ms, iso8601, date or a strptime pattern)",
        )
    return result


def _epoch(values: pa.Array, *, scale: int) -> pa.Array:
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        text = pc.utf8_trim_whitespace(values)
        ok = pc.match_substring_regex(text, r"^[-+]?\d+(\.\d*)?$").fill_null(False)
        values = pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), pa.float64())
    numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)  # (n,)
    micros = np.round(numbers * scale)
    mask = np.isnan(micros)
    return pa.array(np.where(mask, 0, micros).astype(np.int64), pa.int64(), mask=mask).cast(TIMESTAMP_TYPE)


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
