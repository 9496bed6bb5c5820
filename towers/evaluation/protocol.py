"""The evaluation protocol on an Arrow training set: one harness for the two towers and the classical baselines.

A training set (one row per interaction, sorted by row id, with a ``split`` column of train / validation / test and the
point-in-time query features of each row) becomes an :class:`EvaluationData`: the interaction log in index space, the
users' histories, the item codes of the corpus and each item's category. Then

    data = EvaluationData.build(training_table, corpus=items, schema=schema)
    report = data.evaluate_towers(towers, fit_periods="train", eval_period="validation")
    report = data.evaluate_baseline(EASE(l2=200), fit_periods=("train", "validation"), eval_period="test")

Two-tower queries are embedded from each query row's own point-in-time features (the next-item protocol serves every
query as production would); item vectors come from the corpus table (item features as of the cutoff). The protocol
is written out in ``docs/evaluation.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from towers.errors import MissingColumnError, TowersInputError
from towers.evaluation.baseline import HistoryModel, fit_on_periods, next_item_scorer
from towers.evaluation.history import InteractionHistory
from towers.evaluation.next_item import evaluate_next_item
from towers.evaluation.ranking import Scorer
from towers.evaluation.report import EvaluationReport
from towers.evaluation.split import InteractionLog, epoch_micros
from towers.features.schema import FeatureSchema

SPLIT_COLUMN = "split"
TIMESTAMP_COLUMN = "event_timestamp"
UNKNOWN_CATEGORY = "(none)"
MICROS_PER_SECOND = 1_000_000  # the log's timestamps are epoch microseconds


class Embedder(Protocol):
    def embed_queries(self, table: pa.Table) -> np.ndarray: ...

    def embed_items(self, table: pa.Table) -> np.ndarray: ...


def _codes(values: pa.ChunkedArray | pa.Array, *, vocabulary: pa.Array, what: str) -> np.ndarray:
    index = pc.index_in(pc.cast(values, pa.string()), value_set=vocabulary)
    missing = int(pc.sum(pc.is_null(index)).as_py() or 0)
    if missing:
        raise TowersInputError(f"{missing} {what} ids of the training set are not in the corpus; rebuild the corpus table")
    return index.to_numpy(zero_copy_only=False).astype(np.int64)  # (N,)


def _category_list(value: Any) -> list[str]:
    """An item's categories: a string category, a list of them, or the unknown category when there is none."""
    if isinstance(value, str):
        return [value] if value else [UNKNOWN_CATEGORY]
    return [str(v) for v in value] if value else [UNKNOWN_CATEGORY]


@dataclass(frozen=True, eq=False)
class EvaluationData:
    """A training set in index space, ready for :func:`towers.evaluation.next_item.evaluate_next_item`."""

    table: pa.Table  # the training set, one row per interaction (row i of the log = row i of the table)
    corpus: pa.Table  # one row per item code, in code order
    log: InteractionLog
    history: InteractionHistory
    item_categories: list[list[str]]  # per item code

    @classmethod
    def build(cls, table: pa.Table, *, corpus: pa.Table, schema: FeatureSchema) -> EvaluationData:
        for name in (schema.user_id, schema.item_id, TIMESTAMP_COLUMN, SPLIT_COLUMN):
            if name not in table.column_names:
                raise MissingColumnError(f"the training set lacks column {name!r}; build it with the training-set builder")
        if schema.item_id not in corpus.column_names:
            raise MissingColumnError(f"the corpus table lacks column {schema.item_id!r}; pass the item corpus with the schema's item id column")
        item_ids = pc.cast(corpus.column(schema.item_id), pa.string()).combine_chunks()
        if pc.count_distinct(item_ids).as_py() != len(item_ids):
            raise TowersInputError("the corpus table repeats item ids; give one row per item")
        user_ids = pc.unique(pc.cast(table.column(schema.user_id), pa.string()).combine_chunks())
        log = InteractionLog(
            _codes(table.column(schema.user_id), vocabulary=user_ids, what="user"),
            _codes(table.column(schema.item_id), vocabulary=item_ids, what="item"),
            epoch_micros(table.column(TIMESTAMP_COLUMN)),
            np.asarray(table.column(SPLIT_COLUMN).to_pylist(), dtype=object).astype(str),
            len(user_ids),
            len(item_ids),
            MICROS_PER_SECOND,
        )
        if schema.item_category and schema.item_category in corpus.column_names:
            categories = [_category_list(v) for v in corpus.column(schema.item_category).to_pylist()]
        else:
            categories = [[UNKNOWN_CATEGORY]] * len(item_ids)
        return cls(table=table, corpus=corpus, log=log, history=InteractionHistory.build(log), item_categories=categories)

    def rows(self, period: str | Sequence[str]) -> np.ndarray:
        return np.flatnonzero(self.log.mask(period))

    def fit_counts(self, periods: str | Sequence[str]) -> np.ndarray:
        """(n_items,) interactions per item code within ``periods``."""
        return np.bincount(self.log.item_codes[self.log.mask(periods)], minlength=self.log.n_items)

    def towers_scorer(self, towers: Embedder, *, eval_period: str) -> Scorer:
        """Scores of every item for queries of ``eval_period``: each row's query vector from its own features."""
        rows = self.rows(eval_period)
        position = np.full(len(self.log), -1, dtype=np.int64)
        position[rows] = np.arange(rows.size)
        queries = towers.embed_queries(self.table.take(pa.array(rows)))  # (R, D)
        items = towers.embed_items(self.corpus)  # (n_items, D)

        def score(query_rows: np.ndarray) -> np.ndarray:
            return queries[position[query_rows]] @ items.T  # (B, n_items)

        return score

    def evaluate_towers(
        self, towers: Embedder, *, fit_periods: str | Sequence[str] = "train", eval_period: str = "validation"
    ) -> EvaluationReport:
        return self.evaluate(self.towers_scorer(towers, eval_period=eval_period), fit_periods=fit_periods,
                             eval_period=eval_period)

    def evaluate_baseline(
        self, model: HistoryModel, *, fit_periods: str | Sequence[str] = "train", eval_period: str = "validation"
    ) -> EvaluationReport:
        fitted = fit_on_periods(model, self.log, periods=fit_periods)
        return self.evaluate(next_item_scorer(fitted, history=self.history), fit_periods=fit_periods,
                             eval_period=eval_period)

    def evaluate(
        self, score: Scorer, *, fit_periods: str | Sequence[str], eval_period: str, **kwargs: Any
    ) -> EvaluationReport:
        return evaluate_next_item(
            self.log,
            score,
            fit_periods=fit_periods,
            eval_period=eval_period,
            history=self.history,
            item_categories=self.item_categories,
            **kwargs,
        )
