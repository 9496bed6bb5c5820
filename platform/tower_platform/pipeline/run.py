"""The whole main job for one dataset config, step after step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from tower_platform.pipeline.export import ExportedVersion, export_version, monitor_inputs
from tower_platform.pipeline.index import IndexedVersion, index_version
from tower_platform.pipeline.train import Echo, TrainedVersion, period_rows, quiet, train_and_evaluate

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.features.training_set import TrainingSet
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.points import VectorStore


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
    open_vectors: Callable[[], VectorStore],
    source: Path | None = None,
    training_overrides: dict[str, Any] | None = None,
    refit: bool = True,
    promote: bool = False,
    force: bool = False,
    monitor_config: Path | None = None,
    actor: str,
    reason: str | None = None,
    progress: bool = True,
    echo: Echo = quiet,
    show: Callable[[str, Any], None] = lambda _step, _value: None,
) -> PipelineResult:
    """The whole main job for one dataset config. ``show(step, value)`` receives each step's result as it completes
    (the CLI prints tables from it)."""
    from tower_platform.datasets.config import load_dataset_config
    from tower_platform.datasets.ingest import ingest
    from tower_platform.features.materialization import apply_and_materialize
    from tower_platform.features.training_set import build_training_set
    from tower_platform.pipeline.config import tower_config_from
    from tower_platform.pipeline.promote import promote_gated
    from tower_platform.pipeline.recommend import recommend
    from tower_platform.pipeline.register import register_export

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
        version = registry.next_version(dataset.model)
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
                echo(f"[7/8] alignment gates, then promote v{registered.version}")
                promotion = promote_gated(
                    registry, vectors, model=dataset.model, version=registered.version,
                    inputs=monitor_inputs(training_set), monitor_section=dataset.extra.get("monitor"),
                    monitor_config=monitor_config, actor=actor, reason=reason or "towerctl run --promote",
                    force=force, echo=echo, on_report=lambda report: show("alignment", report),
                )
                show("promote", promotion)
            sample_user, recommendations = None, None
            if registry.production_version(dataset.model) is not None:
                sample_user = sample_user_id(training_set)
                echo(f"[8/8] recommend for user {sample_user}")
                recommendations = recommend(registry, vectors, store, model=dataset.model,
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
    test = period_rows(training_set.table, ("test",))
    table = test if test.num_rows else training_set.table
    counts = pc.value_counts(table.column(training_set.schema.user_id).combine_chunks())
    best = max(counts.to_pylist(), key=lambda c: (c["counts"], str(c["values"])))
    return str(best["values"])
