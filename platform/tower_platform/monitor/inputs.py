"""What the alignment report reads besides the collection: the test queries and the interaction log of a version.

:class:`MonitorInputs` holds two Arrow tables cut from a training set:

- ``queries``: the test rows (user id, item id, event timestamp and every point-in-time query feature), in order;
- ``interactions``: every row's user id, item id, event timestamp and split, in the same order (its test rows are
  the queries), for the histories to exclude from each query's ranking and the training interaction counts.

They are written next to a version's artifacts (``<artifact folder>/monitor/{queries,interactions}.parquet``) at
export time, so that ``towerctl models promote`` and ``towerctl monitor`` can measure a version without Feast.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from towers.evaluation import InteractionHistory, InteractionLog, epoch_micros
from tower_platform.errors import InputError, NotFoundError
from tower_platform.monitor.alignment import QuerySet

FOLDER = "monitor"
QUERIES_FILE = "queries.parquet"
INTERACTIONS_FILE = "interactions.parquet"
SPLIT = "split"
TIMESTAMP = "event_timestamp"
TEST = "test"
BASE_COLUMNS = ("user_id", "item_id", TIMESTAMP, SPLIT)


@dataclass(frozen=True, eq=False)
class MonitorInputs:
    queries: pa.Table  # test rows with query features
    interactions: pa.Table  # user_id, item_id, event_timestamp, split of every row
    user_id: str = "user_id"
    item_id: str = "item_id"

    def __post_init__(self) -> None:
        for name in (self.user_id, self.item_id, TIMESTAMP, SPLIT):
            if name not in self.interactions.column_names:
                raise InputError(f"the monitor interactions lack column '{name}'; write them with MonitorInputs.")
        n_test = int(pc.sum(pc.equal(self.interactions.column(SPLIT), TEST)).as_py() or 0)
        if n_test != self.queries.num_rows:
            raise InputError(
                f"the monitor inputs hold {self.queries.num_rows} queries but {n_test} test interactions; write both "
                "from the same training set with MonitorInputs.from_training_set."
            )

    @classmethod
    def from_training_set(cls, table: pa.Table, *, user_id: str = "user_id", item_id: str = "item_id",
                          query_columns: tuple[str, ...] | None = None) -> MonitorInputs:
        """Cut the inputs from a training set table (``query_columns``: the query features to keep; default all)."""
        missing = [c for c in (user_id, item_id, TIMESTAMP, SPLIT) if c not in table.column_names]
        if missing:
            raise InputError(f"the training set lacks columns {missing}; build it with the training-set builder.")
        test = table.filter(pc.equal(table.column(SPLIT), TEST))
        if query_columns is not None:
            keep = [c for c in table.column_names if c in (user_id, item_id, TIMESTAMP) or c in query_columns]
            test = test.select(keep)
        interactions = table.select([user_id, item_id, TIMESTAMP, SPLIT])
        return cls(queries=test, interactions=interactions, user_id=user_id, item_id=item_id)

    # -- files ------------------------------------------------------------------------------------------------------
    def write(self, artifact_folder: str | Path) -> Path:
        """Write ``monitor/queries.parquet`` and ``monitor/interactions.parquet`` (each via a temporary name)."""
        folder = Path(artifact_folder) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        for name, table in ((QUERIES_FILE, self.queries), (INTERACTIONS_FILE, self.interactions)):
            target = folder / name
            tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                pq.write_table(table, tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        return folder

    @classmethod
    def exists(cls, artifact_folder: str | Path) -> bool:
        folder = Path(artifact_folder) / FOLDER
        return (folder / QUERIES_FILE).is_file() and (folder / INTERACTIONS_FILE).is_file()

    @classmethod
    def read(cls, artifact_folder: str | Path, *, user_id: str = "user_id", item_id: str = "item_id") -> MonitorInputs:
        folder = Path(artifact_folder) / FOLDER
        if not cls.exists(artifact_folder):
            raise NotFoundError(
                f"{folder} holds no test queries ({QUERIES_FILE}, {INTERACTIONS_FILE}); pass --training-set FILE "
                "(a training set parquet) to measure this version."
            )
        try:
            return cls(pq.read_table(folder / QUERIES_FILE), pq.read_table(folder / INTERACTIONS_FILE),
                       user_id=user_id, item_id=item_id)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"the monitor inputs in {folder} cannot be read ({exc}); export the version again.") from exc

    @classmethod
    def read_training_set(cls, path: str | Path) -> MonitorInputs:
        """From a training set parquet written by ``tower_platform.features.training_set.write_training_set``."""
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"Training set {path} does not exist; give the parquet file of a training set.")
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"Training set {path} cannot be read as parquet ({exc}); write it again.") from exc
        return cls.from_training_set(table)

    # -- index space ------------------------------------------------------------------------------------------------
    def interaction_counts(self, item_ids: np.ndarray) -> np.ndarray:
        """(N,) training (non-test) interactions of each served item."""
        rows = self.interactions.filter(pc.not_equal(self.interactions.column(SPLIT), TEST))
        codes = _item_rows(rows.column(self.item_id), item_ids)  # (M,) -1 = not served
        return np.bincount(codes[codes >= 0], minlength=len(item_ids)).astype(np.int64)

    def query_set(self, item_ids: np.ndarray, *, embed: Callable[[pa.Table], np.ndarray]) -> QuerySet:
        """Test queries whose target is served and not already in the user's history, embedded by ``embed``.

        The history of a query is its user's distinct items with a timestamp strictly before the query's (any
        split), restricted to served items; it is excluded from the query's ranking.
        """
        n_items = len(item_ids)
        log_items = _item_rows(self.interactions.column(self.item_id), item_ids)  # (M,) -1 = not served
        unknown = log_items < 0
        # items that are not served still belong to histories: give them codes after the served ones
        _, extra = np.unique(pc.cast(self.interactions.column(self.item_id), pa.string()).to_numpy(
            zero_copy_only=False)[unknown], return_inverse=True)
        log_items[unknown] = n_items + extra
        users = pc.cast(self.interactions.column(self.user_id), pa.string()).to_numpy(zero_copy_only=False)
        _, user_codes = np.unique(users, return_inverse=True)
        timestamps = epoch_micros(self.interactions.column(TIMESTAMP))
        periods = self.interactions.column(SPLIT).to_numpy(zero_copy_only=False).astype(str)
        log = InteractionLog(user_codes, log_items, timestamps, periods, int(user_codes.max(initial=-1)) + 1,
                             int(log_items.max(initial=n_items - 1)) + 1)
        test_rows = np.flatnonzero(periods == TEST)  # (T,) in the order of self.queries
        batch = InteractionHistory.build(log).batch_for_rows(test_rows)
        targets = log_items[test_rows]  # (T,)
        served_target = targets < n_items
        pair_rows = batch.row_ids()
        repeat = np.zeros(test_rows.size, dtype=bool)
        repeat[pair_rows[batch.indices == targets[pair_rows]]] = True
        keep = np.flatnonzero(served_target & ~repeat)  # (Q,) positions among the test rows
        # the kept queries' history rows, restricted to served items, as CSR
        kept_pair = np.isin(pair_rows, keep) & (batch.indices < n_items)
        position = np.full(test_rows.size, -1, dtype=np.int64)
        position[keep] = np.arange(keep.size)
        new_rows = position[pair_rows[kept_pair]]
        indptr = np.zeros(keep.size + 1, dtype=np.int64)
        np.cumsum(np.bincount(new_rows, minlength=keep.size), out=indptr[1:])
        vectors = embed(self.queries.take(pa.array(keep))) if keep.size else np.zeros((0, 1), np.float32)
        return QuerySet(
            vectors=np.asarray(vectors, dtype=np.float32),  # (Q, D)
            targets=targets[keep].astype(np.int64),
            history_indptr=indptr,
            history_indices=batch.indices[kept_pair].astype(np.int64),  # row order preserved: CSR by query
            n_skipped=int(test_rows.size - keep.size),
        )


def _item_rows(values: pa.ChunkedArray | pa.Array, item_ids: np.ndarray) -> np.ndarray:
    """(M,) row of each value among ``item_ids``; -1 when it is not one of them."""
    index = pc.index_in(pc.cast(values, pa.string()), value_set=pa.array(np.asarray(item_ids, dtype=str)))
    return pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64)
