"""The steps of the main job as plain functions, shared by the CLI commands and ``towerctl run``.

    ingest -> feast apply + materialize -> training set (audited) -> train (early stop on validation) -> refit on
    train + validation -> evaluate (next-item protocol) -> export ONNX towers + spec.json -> register -> write item
    vectors -> verify -> promote -> recommend

Each function takes what it needs as parameters (no settings are read here) and returns a frozen result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay inside the functions
    from tower_platform.datasets.config import DatasetConfig
    from tower_platform.features import FeastFeatureStore
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.training_set import TrainingSet
    from tower_platform.vectors import QdrantVectorStore
    from towers.training import TrainedTowers
    from towers.config import TowerConfig
    from towers.evaluation import EvaluationReport

SPLIT = "split"
TRAINING_SECTION = "training"
ESTIMATOR_FILE = "frequency_estimator.npz"
SPEC_FILE = "spec.json"
CHECKPOINT_FILE = "towers.pt"

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --- configuration ---------------------------------------------------------------------------------------------------


def tower_config_from(dataset: DatasetConfig, *, overrides: dict[str, Any] | None = None) -> TowerConfig:
    """The ``training`` section of a dataset config (plus overrides) as the towers' config dataclass."""
    from towers.config import TowerConfig

    from towers.errors import TowersConfigError

    section = dataset.extra.get(TRAINING_SECTION) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"Dataset config {dataset.path}: section '{TRAINING_SECTION}' must be a mapping.")
    try:
        return TowerConfig.from_dict(section).with_overrides(overrides or {})
    except TowersConfigError as exc:
        raise ConfigError(f"Dataset config {dataset.path}: section '{TRAINING_SECTION}' is invalid: {exc}") from exc


# --- training and evaluation -----------------------------------------------------------------------------------------


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


def _rows(table: pa.Table, periods: tuple[str, ...]) -> pa.Table:
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
    echo: Echo = _quiet,
) -> TrainedVersion:
    """Train on the train period with early stopping on validation Recall@100, then (``refit``) train again on train +
    validation for the best number of epochs; evaluate with the next-item protocol on validation and test."""
    from towers.training import fit_two_tower
    from towers.evaluation import EvaluationData

    table, schema = training_set.table, training_set.schema
    validation_time, test_time = split_times(training_set)
    validation_corpus = store.item_corpus(validation_time)
    validation_data = EvaluationData.build(table, corpus=validation_corpus, schema=schema)
    train = _rows(table, ("train",))
    if train.num_rows < 2:
        raise InputError(f"The training set has {train.num_rows} training rows; widen the time window or the split.")

    def validation_recall(towers: TrainedTowers) -> float:
        report = validation_data.evaluate_towers(towers, fit_periods="train", eval_period="validation")
        return report.metrics["recall@100"]

    echo(f"training on {train.num_rows:,} interactions (validation: {validation_data.rows('validation').size:,})")
    towers = fit_two_tower(train, corpus=validation_corpus, schema=schema, config=config,
                           validation=validation_recall, progress=progress)
    validation = validation_data.evaluate_towers(towers, fit_periods="train", eval_period="validation")
    best_epoch = towers.history.best_epoch if towers.history else None

    test_corpus = store.item_corpus(test_time)
    epochs_refit = None
    if refit:
        epochs_refit = best_epoch or config.training.epochs
        fit_rows = _rows(table, ("train", "validation"))
        echo(f"refitting on train + validation ({fit_rows.num_rows:,} interactions, {epochs_refit} epochs)")
        towers = fit_two_tower(fit_rows, corpus=test_corpus, schema=schema,
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


# --- export ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedVersion:
    folder: Path
    version: int
    sha256: dict[str, str]
    max_abs_diff: float


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def export_version(
    trained: TrainedVersion,
    training_set: TrainingSet,
    corpus: pa.Table,
    *,
    model: str,
    version: int,
    artifacts_dir: Path,
    folder_name: str | None = None,
) -> ExportedVersion:
    """Write query.onnx, item.onnx (parity-checked), the estimator state, a checkpoint and spec.json to
    ``artifacts_dir/<model>/<folder_name or v<version>>/``; the folder appears only when complete. ``corpus`` is the
    item corpus the version will serve (its first rows are the item side of the parity check)."""
    import numpy as np

    from towers.onnx import ExportParityError

    final = Path(artifacts_dir) / model / (folder_name or f"v{version}")
    if final.exists():
        raise ConfigError(f"Artifact folder {final} already exists; remove it or register that export instead.")
    staging = final.with_name(f".{final.name}.partial")
    if staging.exists():
        import shutil

        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    table = training_set.table
    sample = table.slice(0, 0)
    for period in ("test", "validation", "train"):  # real rows of every period, latest first
        sample = pa.concat_tables([sample, _rows(table, (period,)).slice(0, 256)])
    try:
        result = trained.towers.export(
            staging,
            model_name=model,
            model_version=version,
            feature_service=_feature_service_label(training_set),
            sample=sample,
            item_sample=corpus.slice(0, 512),
        )
    except ExportParityError as exc:
        raise ConfigError(f"Export of {model} v{version} failed its ONNX parity check: {exc}") from exc
    monitor_inputs(training_set).write(staging)  # test queries for `towerctl monitor` and the promotion gates
    np.savez(staging / ESTIMATOR_FILE, **trained.towers.estimator_state())
    trained.towers.save(staging / CHECKPOINT_FILE)
    spec = {
        "format_version": 1,
        "model": model,
        "version": version,
        "feature_service": _feature_service_label(training_set),
        "feature_services": list(training_set.feature_services),
        "features": training_set.schema.to_dict(),
        "training_config": trained.config.to_dict(),
        "fingerprint": training_set.fingerprint,
        "time_window": _time_window(training_set),
        "split": training_set.split.to_dict(),
        "estimator_path": ESTIMATOR_FILE,
        "metrics": trained.metrics(),
        "sha256": result.sha256s,
    }
    _write_atomically(staging / SPEC_FILE, json.dumps(spec, indent=2, default=str))
    os.replace(staging, final)
    return ExportedVersion(folder=final, version=version, sha256=result.sha256s, max_abs_diff=result.max_abs_diff)


def monitor_inputs(training_set: TrainingSet) -> Any:
    """The test queries (query features only) and interaction log the alignment monitor measures a version on."""
    from tower_platform.monitor.inputs import MonitorInputs

    schema = training_set.schema
    return MonitorInputs.from_training_set(training_set.table, user_id=schema.user_id, item_id=schema.item_id,
                                           query_columns=tuple(f.name for f in schema.query))


def _feature_service_label(training_set: TrainingSet) -> str:
    """The feature services a version names, as one label: ``query_features+item_features``."""
    return "+".join(training_set.feature_services)


def _time_window(training_set: TrainingSet) -> dict[str, str | None]:
    times = training_set.table.column("event_timestamp")
    start, end = pc.min(times).as_py(), pc.max(times).as_py()
    return {"start": start.isoformat() if start else None, "end": end.isoformat() if end else None}


def next_version(registry: SqlRegistryStore, model: str) -> int:
    from tower_platform.errors import NotFoundError

    try:
        versions = registry.list_versions(model)
    except NotFoundError:
        return 1
    return max((v.version for v in versions), default=0) + 1


# --- registry, vectors, promotion ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexedVersion:
    collection: str
    items: int
    written: int
    skipped: int
    items_per_s: float
    dimension: int
    distance: str
    sampled: int
    max_abs_diff: float
    status: str


def index_version(
    registry: SqlRegistryStore,
    vectors: QdrantVectorStore,
    corpus: pa.Table,
    *,
    model: str,
    version: int,
    actor: str,
    batch_size: int = 1024,
    progress: bool = True,
) -> IndexedVersion:
    """Embed the corpus with the version's item.onnx into ``<model>__v<N>``, verify it, record the collection and mark
    the version indexed. Safe to re-run: the writer resumes and upserts are idempotent. Never touches the alias."""
    from tower_platform.embedding_writer import QdrantEmbeddingWriter, verify_collection

    mv = registry.get_version(model, version)
    artifact = mv.artifact("item.onnx")
    writer = QdrantEmbeddingWriter(vectors, artifact.path, expected_sha256=artifact.sha256, batch_size=batch_size,
                                   progress=progress)
    written = writer.write(corpus, model=model, version=version)
    verified = verify_collection(vectors, tower=writer.tower, items=corpus)
    registry.record_collection(model, version, name=verified.collection, point_count=verified.point_count,
                               dimension=verified.dimension, distance=verified.distance, verified=True, actor=actor)
    indexed = registry.mark_indexed(model, version, actor=actor, reason="item vectors written and verified")
    return IndexedVersion(
        collection=written.collection,
        items=written.items,
        written=written.written,
        skipped=written.skipped,
        items_per_s=float(written.items_per_s),
        dimension=verified.dimension,
        distance=verified.distance,
        sampled=verified.sampled,
        max_abs_diff=float(verified.max_abs_diff),
        status=indexed.status,
    )


def register_export(
    registry: SqlRegistryStore, folder: Path, *, model: str | None, actor: str, reason: str | None = None
) -> Any:
    """Register an export folder (query.onnx, item.onnx, spec.json) as a version after checking its sha256s."""
    from tower_platform.registry.exported_model import read_exported_model
    from tower_platform.registry.store import check_model_name

    exported = read_exported_model(folder, model=model)
    check_model_name(exported.model)
    return registry.register_version(
        exported.model,
        artifacts=exported.artifacts,
        feature_service=exported.feature_service,
        features=exported.features,
        training_config=exported.training_config,
        fingerprint=exported.fingerprint,
        time_window=exported.time_window,
        estimator_path=exported.estimator_path,
        metrics=exported.metrics,
        actor=actor,
        reason=reason,
        version=exported.version,
    )


def recommend(
    registry: SqlRegistryStore,
    vectors: QdrantVectorStore,
    query_features: Callable[[str, str], Any],
    *,
    model: str,
    user_id: str,
    k: int = 10,
    category: str | None = None,
) -> Any:
    """Top-k items for a user from the production version: online features -> query.onnx -> search on the alias.

    query_features(service_name, user_key) returns the online query-feature source (a QueryFeatureSource).
    """
    from tower_platform.errors import ConflictError
    from tower_platform.onnx_tower import OnnxTower
    from tower_platform.retriever import Retriever

    production = registry.production_version(model)
    if production is None:
        raise ConflictError(
            f"Model '{model}' has no production version; promote one with `towerctl models promote {model} N`."
        )
    artifact = production.artifact("query.onnx")
    tower = OnnxTower(artifact.path, expected_sha256=artifact.sha256)
    schema = tower.metadata.schema
    service = (schema.get("metadata") or {}).get("query_service") or tower.metadata.feature_service
    features = query_features(service, str(schema.get("user_id") or "user_id"))
    retriever = Retriever(vectors, tower, features, model=model, expected_version=production.version)
    return retriever.recommend(user_id, k=k, category=category)


def online_query_features(store: FeastFeatureStore) -> Callable[[str, str], Any]:
    from tower_platform.retriever import OnlineQueryFeatures

    return lambda service, user_key: OnlineQueryFeatures(store, service_name=service, user_key=user_key)


# --- the main job ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineResult:
    dataset: str
    model: str
    version: int
    training_set: TrainingSet
    trained: TrainedVersion
    exported: ExportedVersion
    indexed: IndexedVersion
    promotion: Any | None
    sample_user: str | None
    recommendations: Any | None


def run_pipeline(
    config_path: Path,
    *,
    home_dir: Path,
    repo_dir: Path,
    artifacts_dir: Path,
    open_registry: Callable[[], SqlRegistryStore],
    open_vectors: Callable[[], QdrantVectorStore],
    source: Path | None = None,
    training_overrides: dict[str, Any] | None = None,
    refit: bool = True,
    promote: bool = False,
    force: bool = False,
    monitor_config: Path | None = None,
    actor: str,
    reason: str | None = None,
    progress: bool = True,
    echo: Echo = _quiet,
    show: Callable[[str, Any], None] = lambda _step, _value: None,
) -> PipelineResult:
    """The whole main job for one dataset config. ``show(step, value)`` receives each step's result as it completes
    (the CLI prints tables from it)."""
    from tower_platform.datasets.config import load_dataset_config
    from tower_platform.datasets.ingest import ingest
    from tower_platform.feature_jobs import apply_and_materialize
    from tower_platform.registry.promotion import promote as promote_version
    from tower_platform.training_set import build_training_set

    dataset = load_dataset_config(config_path)
    config = tower_config_from(dataset, overrides=training_overrides)
    echo(f"[1/8] ingest {dataset.name}")
    show("ingest", ingest(dataset, home_dir=home_dir, source=source))
    echo("[2/8] feast apply + materialize")
    store, applied, materialized = apply_and_materialize(repo_dir=repo_dir, home_dir=home_dir)
    show("features", (applied, materialized))
    echo("[3/8] point-in-time training set")
    training_set = build_training_set(store, dataset)
    show("training_set", training_set)
    echo("[4/8] train and evaluate")
    trained = train_and_evaluate(training_set, store, config=config, refit=refit, progress=progress, echo=echo)
    show("metrics", trained)
    with open_registry() as registry:
        version = next_version(registry, dataset.model)
        echo(f"[5/8] export {dataset.model} v{version}")
        corpus = store.item_corpus(datetime.now(UTC))  # what the version serves: exported, then indexed
        exported = export_version(trained, training_set, corpus, model=dataset.model, version=version,
                                  artifacts_dir=artifacts_dir)
        show("export", exported)
        registered = register_export(registry, exported.folder, model=dataset.model, actor=actor, reason=reason)
        show("register", registered)
        echo(f"[6/8] write and verify item vectors of v{registered.version}")
        with open_vectors() as vectors:
            indexed = index_version(registry, vectors, corpus, model=dataset.model, version=registered.version,
                                    actor=actor, progress=progress)
            show("index", indexed)
            promotion = None
            if promote:
                from tower_platform.monitor.gate import AlignmentGate
                from tower_platform.monitor.thresholds import load_thresholds

                echo(f"[7/8] alignment gates, then promote v{registered.version}")
                gate = AlignmentGate(
                    registry, vectors, actor=actor, inputs=monitor_inputs(training_set), echo=echo,
                    thresholds=load_thresholds(dataset_section=dataset.extra.get("monitor"), path=monitor_config),
                    on_report=lambda report: show("alignment", report),
                )
                promotion = promote_version(registry, vectors, dataset.model, registered.version, actor=actor,
                                            reason=reason or "towerctl run --promote", gate=gate, force=force)
                show("promote", promotion)
            sample_user, recommendations = None, None
            if registry.production_version(dataset.model) is not None:
                sample_user = sample_user_id(training_set)
                echo(f"[8/8] recommend for user {sample_user}")
                recommendations = recommend(registry, vectors, online_query_features(store), model=dataset.model,
                                            user_id=sample_user)
                show("recommend", recommendations)
    return PipelineResult(
        dataset=dataset.name,
        model=dataset.model,
        version=registered.version,
        training_set=training_set,
        trained=trained,
        exported=exported,
        indexed=indexed,
        promotion=promotion,
        sample_user=sample_user,
        recommendations=recommendations,
    )


def sample_user_id(training_set: TrainingSet) -> str:
    """The most active user of the test period (a user with a history, so the recommendation shows exclusions)."""
    test = _rows(training_set.table, ("test",))
    table = test if test.num_rows else training_set.table
    counts = pc.value_counts(table.column(training_set.schema.user_id).combine_chunks())
    best = max(counts.to_pylist(), key=lambda c: (c["counts"], str(c["values"])))
    return str(best["values"])
