"""Interactions in index space and the global time split (train / validation / test).

The protocol is written out in ``docs/evaluation.md``. Timestamps are int64 (epoch values, or epoch nanoseconds for
datetime64 input; ``InteractionLog.ticks_per_second`` says which); cutoff_validation = ts_sorted[floor(0.8 N)] and cutoff_test = ts_sorted[floor(0.9 N)].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from towers.errors import TowersInputError

PERIODS: tuple[str, ...] = ("train", "validation", "test")
NANOS_PER_SECOND = 1_000_000_000


def as_int64_time(values: Any) -> np.ndarray:
    """Timestamps as int64: integers are kept as they are (e.g. epoch seconds), datetime64 becomes epoch nanoseconds."""
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.datetime64):
        return array.astype("datetime64[ns]").astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TowersInputError(f"timestamps must be int64 epoch values or datetime64, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def epoch_micros(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(N,) int64 epoch microseconds (UTC) of an Arrow timestamp column of any unit or zone; an integer column is
    taken as it is. The one conversion shared by the evaluation protocol and the platform's alignment monitor."""
    if pa.types.is_timestamp(column.type):
        return pc.cast(pc.cast(column, pa.timestamp("us")), pa.int64()).to_numpy(zero_copy_only=False)  # µs
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)


@dataclass(frozen=True)
class TimeSplit:
    """Global cutoffs of the split: train ts < cutoff_validation <= validation ts < cutoff_test <= test ts."""

    cutoff_validation: int
    cutoff_test: int

    @classmethod
    def from_timestamps(cls, timestamps: Any, *, validation_start: float = 0.8, test_start: float = 0.9) -> TimeSplit:
        """cutoff_validation = ts_sorted[floor(0.8 N)], cutoff_test = ts_sorted[floor(0.9 N)]."""
        ts = np.sort(as_int64_time(timestamps))
        if ts.size == 0:
            raise TowersInputError("cannot split an empty set of interactions by time")
        if not 0.0 < validation_start <= test_start < 1.0:
            raise TowersInputError("the split needs 0 < validation_start <= test_start < 1")
        n = ts.size
        return cls(int(ts[math.floor(validation_start * n)]), int(ts[math.floor(test_start * n)]))

    def periods(self, timestamps: Any) -> np.ndarray:
        """(N,) period label of each timestamp: 'train', 'validation' or 'test'."""
        ts = as_int64_time(timestamps)
        index = (ts >= self.cutoff_validation).astype(np.int64) + (ts >= self.cutoff_test)  # (N,) in {0, 1, 2}
        return np.asarray(PERIODS)[index]


@dataclass(frozen=True, eq=False)
class InteractionLog:
    """All interactions of a dataset in index space, each with its period."""

    user_codes: np.ndarray  # (N,) int64 in [0, n_users)
    item_codes: np.ndarray  # (N,) int64 in [0, n_items)
    timestamps: np.ndarray  # (N,) int64 (epoch seconds, or nanoseconds for datetime64 input)
    periods: np.ndarray  # (N,) labels, normally 'train' / 'validation' / 'test'
    n_users: int
    n_items: int
    ticks_per_second: int = 1  # timestamp units per second: 1 for epoch seconds (datetime64 input: 10^9)

    def __post_init__(self) -> None:
        users = np.asarray(self.user_codes).astype(np.int64, copy=False)
        items = np.asarray(self.item_codes).astype(np.int64, copy=False)
        if np.issubdtype(np.asarray(self.timestamps).dtype, np.datetime64):
            object.__setattr__(self, "ticks_per_second", NANOS_PER_SECOND)
        if self.ticks_per_second < 1:
            raise TowersInputError(f"InteractionLog ticks_per_second must be >= 1, got {self.ticks_per_second}")
        timestamps = as_int64_time(self.timestamps)
        periods = np.asarray(self.periods)
        n = users.shape[0]
        if users.ndim != 1 or items.shape != (n,) or timestamps.shape != (n,) or periods.shape != (n,):
            raise TowersInputError(
                "InteractionLog needs 1-D user_codes, item_codes, timestamps and periods of one length; got shapes "
                f"{users.shape}, {items.shape}, {timestamps.shape}, {periods.shape}"
            )
        if n and (users.min() < 0 or users.max() >= self.n_users):
            raise TowersInputError(f"InteractionLog user_codes must lie in [0, n_users={self.n_users}); re-encode the users")
        if n and (items.min() < 0 or items.max() >= self.n_items):
            raise TowersInputError(f"InteractionLog item_codes must lie in [0, n_items={self.n_items}); re-encode the items")
        object.__setattr__(self, "user_codes", users)
        object.__setattr__(self, "item_codes", items)
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "periods", periods)
        object.__setattr__(self, "n_users", int(self.n_users))
        object.__setattr__(self, "n_items", int(self.n_items))
        object.__setattr__(self, "ticks_per_second", int(self.ticks_per_second))

    @classmethod
    def split_by_time(
        cls, user_codes: Any, *, item_codes: Any, timestamps: Any, n_users: int, n_items: int, ticks_per_second: int = 1
    ) -> InteractionLog:
        """A log whose periods come from the global 80% / 90% time cutoffs of docs/evaluation.md."""
        split = TimeSplit.from_timestamps(timestamps)
        return cls(user_codes, item_codes, timestamps, split.periods(timestamps), n_users, n_items, ticks_per_second)

    def __len__(self) -> int:
        return int(self.user_codes.shape[0])

    def mask(self, periods: str | Sequence[str]) -> np.ndarray:
        """(N,) bool: the interactions of the named period(s)."""
        names = [periods] if isinstance(periods, str) else list(periods)
        known = set(np.unique(self.periods).tolist())
        missing = [p for p in names if p not in known]
        if missing:
            raise TowersInputError(f"InteractionLog has no period {missing}; its periods are {sorted(known)}")
        return np.isin(self.periods, names)
