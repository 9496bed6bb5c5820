"""``towerctl embeddings write|verify|status``: item vectors of a model version in its Qdrant collection.

``write`` embeds the whole item corpus with the version's ``item.onnx``, verifies the collection, records it in the
registry and marks the version ``indexed`` (safe to re-run: it resumes and skips what is complete). It never
touches the production alias: promotion is ``towerctl models promote``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from tower_platform.cli import context, serving_check
from tower_platform.cli.arguments import MODEL_ARGUMENT
from tower_platform.cli.context import current_actor, open_registry, open_vectors
from tower_platform.cli.output import err_console, print_json, print_mapping, print_table
from tower_platform.settings import get_settings

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.entities import ModelVersion
    from tower_platform.settings import Settings

embeddings_app = typer.Typer(no_args_is_help=True, help="Item vectors in Qdrant: write, verify, status.")



def item_source(settings: Settings) -> Any:
    """The item feature source of the deployment: the Feast repository (imported when used: it is slow to import)."""
    return context.feature_store(settings)


def _item_artifact(version: ModelVersion) -> tuple[str, str]:
    from tower_platform.pipeline.index import ITEM_TOWER

    artifact = version.artifact(ITEM_TOWER)
    return artifact.path, artifact.sha256


@embeddings_app.command("write")
def write_command(
    model: str = MODEL_ARGUMENT,
    version: int = typer.Option(..., "--version", help="Model version whose item vectors to write."),
    batch_size: int = typer.Option(1024, "--batch-size", min=1, help="Items per ONNX run and upsert."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Delete the version's collection first and write it again "
                                 "(new HNSW settings take effect); refused for the production collection."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Embed every item with the version's item.onnx, build its index, verify the collection (recall of the graph
    included), record it and mark the version indexed."""
    from tower_platform.pipeline.index import index_version

    settings = get_settings()
    with open_registry(write=True, settings=settings) as registry:
        corpus = item_source(settings).item_corpus(datetime.now(UTC))
        with open_vectors(settings) as vectors:
            indexed = index_version(registry, vectors, corpus, model=model, version=version, actor=current_actor(),
                                    batch_size=batch_size, rebuild=rebuild)
    result = {"model": model, "version": version, **vars(indexed)}
    if as_json:
        print_json(result)
    else:
        print_mapping(f"{model} v{version}: embeddings written", result)


@embeddings_app.command("verify")
def verify_command(
    model: str = MODEL_ARGUMENT,
    version: int = typer.Option(..., "--version", help="Model version whose collection to verify."),
    sample_size: int = typer.Option(128, "--sample", min=1, help="Stored vectors compared with fresh ones."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check a version's collection (count, ids, unit norms, parity of a sample, dimension, distance, recall of the
    graph against exact search); mark it indexed."""
    from tower_platform.vectors.writer import verify_collection
    from tower_platform.serving.onnx_tower import OnnxTower

    settings = get_settings()
    with open_registry(write=True, settings=settings) as registry:
        mv = registry.get_version(model, version)
        path, sha256 = _item_artifact(mv)
        tower = OnnxTower(path, expected_sha256=sha256)
        corpus = item_source(settings).item_corpus(datetime.now(UTC))
        with open_vectors(settings) as vectors:
            report = verify_collection(vectors, tower=tower, items=corpus, sample_size=sample_size)
        registry.record_collection(
            model,
            version,
            name=report.collection,
            point_count=report.point_count,
            dimension=report.dimension,
            distance=report.distance,
            verified=True,
            actor=current_actor(),
        )
        indexed = registry.mark_indexed(model, version, actor=current_actor(), reason="collection verified")
    result = {**vars(report), "status": indexed.status}
    if as_json:
        print_json(result)
    else:
        print_mapping(f"{model} v{version}: collection verified", result)


@embeddings_app.command("status")
def status_command(
    model: str = MODEL_ARGUMENT,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Each version's collection: what the registry recorded beside what Qdrant holds, the production alias, and
    whether the two agree (a problem is flagged here and named on stderr; `towerctl models reconcile` repairs it)."""
    from tower_platform.naming import collection_name, production_alias

    settings = get_settings()
    with open_registry(write=True, settings=settings) as registry, open_vectors(settings) as vectors:
        versions = registry.list_versions(model)
        state = serving_check.check(registry, vectors, model)
        serving_check.warn(state)
        existing = set(vectors.list_collections())
        alias_target = vectors.alias_target(production_alias(model))
        rows = []
        for mv in versions:
            name = mv.collection.name if mv.collection else collection_name(model, mv.version)
            live = vectors.collection_info(name).point_count if name in existing else None
            rows.append(
                {
                    "version": mv.version,
                    "status": mv.status,
                    "collection": name,
                    "recorded_points": mv.collection.point_count if mv.collection else None,
                    "qdrant_points": live,
                    "verified": bool(mv.collection and mv.collection.verified),
                    "alias": name == alias_target,
                    "problems": [p.message for p in state.problems_of(mv.version)],
                }
            )
    if as_json:
        print_json({"model": model, "alias": production_alias(model), "alias_target": alias_target, "versions": rows,
                    "serving": serving_check.as_json(state)})
        return
    print_table(
        f"{model}: collections (alias '{production_alias(model)}' -> {alias_target or 'none'})"
        + ("" if state.ok else f" ({serving_check.summary(state)})"),
        ["version", "status", "collection", "recorded", "in qdrant", "verified", "alias", "problems"],
        [
            (r["version"], r["status"], r["collection"], r["recorded_points"], r["qdrant_points"],
             "yes" if r["verified"] else "no", "<-" if r["alias"] else "",
             serving_check.short(state.problems_of(r["version"])))
            for r in rows
        ],
        highlight_rows={i for i, r in enumerate(rows) if r["problems"]},
    )
    if not rows:
        err_console.print(f"model '{model}' has no versions yet; see `towerctl models list`.")


