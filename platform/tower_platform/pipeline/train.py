"""Train two towers on a training set (early stopping on validation, refit on train + validation) and evaluate them
with the next-item protocol on the full corpus."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.errors import InputError

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay inside the functions
    from tower_platform.features.store import FeastFeatureStore
    from tower_platform.features.training_set import TrainingSet
    from towers.training import TrainedTowers
    from towers.config import TowerConfig
    from towers.evaluation import EvaluationReport

SPLIT = "split"

Echo = Callable[[str], None]


def quiet(_: str) -> None:
    """An ``echo`` that prints nothing."""


@dataclass(frozen=True)
class TrainedVersion:
    """A trained model and its figures: validation (fit on train) and test (refit on train + validation)."""

    towers: TrainedTowers
    validation: EvaluationReport
    test: EvaluationReport
    best_epoch: int | None
    epochs_refit: int | None
    config: TowerConfig

    def metrics(self) -> dict[str, Any]:
        return {
            "test": self.test.headline(),
            "validation": self.validation.headline(),
            "best_epoch": self.best_epoch,
            "epochs_refit": self.epochs_refit,
        }


def period_rows(table: pa.Table, periods: tuple[str, ...]) -> pa.Table:
    """The rows of a training set whose split is one of ``periods``."""
    return table.filter(pc.is_in(table.column(SPLIT), value_set=pa.array(periods)))


def split_times(training_set: TrainingSet) -> tuple[datetime, datetime]:
    """Item features are taken as of the validation cutoff (fit on train) and the test cutoff (fit on train + val)."""
    split = training_set.split
    if split.validation_cutoff is not None and split.test_cutoff is not None:
        return split.validation_cutoff, split.test_cutoff
    times = training_set.table.column("event_timestamp")
    end = pc.max(times).as_py()
    return end, end


def train_and_evaluate(
    training_set: TrainingSet,
    store: FeastFeatureStore,
    *,
    config: TowerConfig,
    refit: bool = True,
    progress: bool = True,
    echo: Echo = quiet,
    fit: Callable[..., TrainedTowers] | None = None,
) -> TrainedVersion:
    """Train on the train period with early stopping on validation Recall@100, then (``refit``) train again on train +
    validation for the best number of epochs; evaluate with the next-item protocol on validation and test. ``fit``
    replaces ``fit_two_tower`` (same arguments), e.g. by rank 0's fit of a data-parallel run."""
    from towers.evaluation import EvaluationData
    from towers.training import fit_two_tower

    fit = fit or fit_two_tower

    table, schema = training_set.table, training_set.schema
    validation_time, test_time = split_times(training_set)
    validation_corpus = store.item_corpus(validation_time)
    validation_data = EvaluationData.build(table, corpus=validation_corpus, schema=schema)
    train = period_rows(table, ("train",))
    if train.num_rows < 2:
        raise InputError(f"The training set has {train.num_rows} training rows; widen the time window or the split.")

    def validation_recall(towers: TrainedTowers) -> float:
        report = validation_data.evaluate_towers(towers, fit_periods="train", eval_period="validation")
        return report.metrics["recall@100"]

    echo(f"training on {train.num_rows:,} interactions (validation: {validation_data.rows('validation').size:,})")
    towers = fit(train, corpus=validation_corpus, schema=schema, config=config, validation=validation_recall,
                 progress=progress)
    validation = validation_data.evaluate_towers(towers, fit_periods="train", eval_period="validation")
    best_epoch = towers.history.best_epoch if towers.history else None

    test_corpus = store.item_corpus(test_time)
    epochs_refit = None
    if refit:
        epochs_refit = best_epoch or config.training.epochs
        fit_rows = period_rows(table, ("train", "validation"))
        echo(f"refitting on train + validation ({fit_rows.num_rows:,} interactions, {epochs_refit} epochs)")
        towers = fit(fit_rows, corpus=test_corpus, schema=schema,
                     config=config.with_overrides({"training.epochs": epochs_refit}), progress=progress)
    test_data = EvaluationData.build(table, corpus=test_corpus, schema=schema)
    test = test_data.evaluate_towers(towers, fit_periods=("train", "validation"), eval_period="test")
    return TrainedVersion(towers=towers, validation=validation, test=test, best_epoch=best_epoch,
                          epochs_refit=epochs_refit, config=config)


def metrics_rows(reports: dict[str, EvaluationReport]) -> tuple[list[str], list[list[Any]]]:
    """A table of headline figures, one row per named report (for rich tables and JSON)."""
    keys = ["recall@10", "recall@50", "recall@100", "ndcg@10", "ndcg@50", "mrr", "recall@100_per_user",
            "recall@100_head", "recall@100_torso", "recall@100_tail"]
    rows = []
    for name, report in reports.items():
        flat = report.headline()
        rows.append([name, int(flat["n_queries"]), int(flat["n_users"]), *(flat[k] for k in keys)])
    return ["model", "queries", "users", *keys], rows
