"""``towerctl models list|show|register|promote|rollback|history|gc``: model versions in the registry.

Read commands take ``--json``; commands that change state take ``--actor`` (default: the OS user) and ``--reason``,
both recorded in the audit log, and ``--dry-run`` (checks everything, changes nothing). Promotion, rollback and gc
open the vector store (``tower_platform.cli.context.open_vectors``) only when they run.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tower_platform.cli.context import current_actor, open_registry, open_vectors
from tower_platform.cli.output import err_console, print_json, print_mapping, print_table
from tower_platform.settings import get_settings

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.entities import AuditEvent, ModelVersion
    from tower_platform.registry.promotion import PromotionResult

models_app = typer.Typer(no_args_is_help=True, help="Model versions: register, promote, roll back, history, gc.")


_ACTOR = typer.Option(None, "--actor", help="Who does this, for the audit log (default: the OS user).")
_REASON = typer.Option(None, "--reason", help="Why, for the audit log.")
_JSON = typer.Option(False, "--json", help="Print the result as JSON.")
_DRY_RUN = typer.Option(False, "--dry-run", help="Check and show what would happen; change nothing.")


_VERSION_COLUMNS = ["version", "status", "collection", "points", "verified", "created (UTC)"]


def _version_row(v: ModelVersion) -> list[Any]:
    collection = v.collection
    return [
        v.version,
        v.status,
        collection.name if collection else None,
        collection.point_count if collection else None,
        "yes" if collection and collection.verified else "no",
        v.created_at.strftime("%Y-%m-%d %H:%M"),
    ]


def _version_payload(v: ModelVersion) -> dict[str, Any]:
    payload = asdict(v)
    payload["artifacts"] = {a["name"]: {"path": a["path"], "sha256": a["sha256"]} for a in payload["artifacts"]}
    return payload


def _event_row(e: AuditEvent) -> list[Any]:
    statuses = f"{e.from_status or '-'} -> {e.to_status}" if e.to_status else None
    versions = f"{e.from_version or '-'} -> {e.to_version}" if e.to_version else None
    return [e.id, e.created_at, e.action, e.version, statuses, versions, e.actor, e.reason]


def _print_promotion(result: PromotionResult, *, verb: str, as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    if result.dry_run:
        title = f"dry run: {verb} would point '{result.alias}' at {result.collection}"
    elif not result.changed:
        title = f"{result.model} v{result.version} is already production; nothing changed"
    else:
        title = f"{verb}: '{result.alias}' now points at {result.collection}"
    print_mapping(
        title,
        {
            "model": result.model,
            "production version": result.version,
            "previous version": result.previous_version,
            "collection": result.collection,
            "alias": result.alias,
            "audit event": result.event.id if result.event else None,
            "gates": _gate_summary(result),
        },
    )


def _gate_summary(result: PromotionResult) -> str | None:
    verdict = result.verdict
    if verdict is None:
        return None
    if not (verdict.details or {}).get("measured", True):
        return f"{verdict.gate}: not measured ({(verdict.details or {}).get('note')})"
    if verdict.passed:
        return f"{verdict.gate}: passed"
    return f"{verdict.gate}: {len(verdict.breaches)} breach(es), forced" if result.forced else None


@models_app.command("list")
def list_command(
    model: str | None = typer.Argument(None, help="A model name: list its versions instead of the models."),
    as_json: bool = _JSON,
) -> None:
    """List the registered models, or the versions of one model."""
    with open_registry() as registry:
        if model is None:
            models = registry.list_models()
            if as_json:
                print_json(models)
            else:
                print_table(
                    "models",
                    ["model", "production", "latest", "versions", "created"],
                    [[m.name, m.production_version, m.latest_version, m.version_count, m.created_at] for m in models],
                )
            return
        versions = registry.list_versions(model)
    if as_json:
        print_json([_version_payload(v) for v in versions])
    else:
        print_table(
            f"{model}: versions",
            _VERSION_COLUMNS,
            [_version_row(v) for v in versions],
        )


@models_app.command("show")
def show_command(
    model: str = typer.Argument(..., help="Model name, e.g. movies."),
    version: int | None = typer.Option(None, "--version", help="Version (default: production, else the latest)."),
    as_json: bool = _JSON,
) -> None:
    """Everything the registry records about one version: artifacts, features, window, collection, metrics."""
    from tower_platform.errors import NotFoundError

    with open_registry() as registry:
        if version is None:
            chosen = registry.production_version(model)
            if chosen is None:
                versions = registry.list_versions(model)
                if not versions:
                    raise NotFoundError(f"Model '{model}' has no versions yet; register one with `towerctl models register`.")
                chosen = versions[-1]
        else:
            chosen = registry.get_version(model, version)
    payload = _version_payload(chosen)
    if as_json:
        print_json(payload)
        return
    flat = {k: v for k, v in payload.items() if k not in ("artifacts", "metrics", "collection", "training_config")}
    for name, artifact in payload["artifacts"].items():
        flat[name] = f"{artifact['path']} (sha256 {artifact['sha256'][:12]}…)"
    if payload["collection"]:
        flat["collection"] = (
            f"{payload['collection']['name']} ({payload['collection']['point_count']} points, "
            f"verified {'yes' if chosen.collection and chosen.collection.verified else 'no'})"
        )
    print_mapping(f"{model} v{chosen.version}", flat)
    if chosen.metrics:
        print_mapping("metrics", chosen.metrics)


@models_app.command("register")
def register_command(
    artifact_dir: str = typer.Argument(..., help="Folder written by the export: query.onnx, item.onnx, spec.json."),
    model: str | None = typer.Option(None, "--model", help="Model name (default: the one in spec.json)."),
    actor: str | None = _ACTOR,
    reason: str | None = _REASON,
    dry_run: bool = _DRY_RUN,
    as_json: bool = _JSON,
) -> None:
    """Register an exported model folder as a new version (status registered) after checking its sha256s."""
    from tower_platform.registry.exported_model import read_exported_model
    from tower_platform.registry.store import check_model_name

    exported = read_exported_model(artifact_dir, model=model)
    check_model_name(exported.model)
    if dry_run:
        payload = {
            "model": exported.model,
            "version": exported.version or "next free",
            "feature_service": exported.feature_service,
            "fingerprint": exported.fingerprint,
            "dimension": exported.dimension,
            **{name: sha for name, (_path, sha) in exported.artifacts.items()},
        }
        if as_json:
            print_json({**payload, "dry_run": True})
        else:
            print_mapping(f"dry run: would register {exported.folder}", payload)
        return
    from tower_platform.pipeline.register import register_export

    with open_registry(write=True) as registry:
        created = register_export(registry, exported.folder, model=exported.model, actor=actor or current_actor(),
                                  reason=reason)
    if as_json:
        print_json(_version_payload(created))
    else:
        print_table(
            f"registered {created.model} v{created.version}",
            _VERSION_COLUMNS,
            [_version_row(created)],
        )
        err_console.print(
            f"next: towerctl embeddings write {created.model} --version {created.version}", markup=False, highlight=False
        )


@models_app.command("promote")
def promote_command(
    model: str = typer.Argument(..., help="Model name, e.g. movies."),
    version: int = typer.Argument(..., help="The indexed version to make production."),
    actor: str | None = _ACTOR,
    reason: str | None = _REASON,
    force: bool = typer.Option(False, "--force", help="Promote despite breached alignment gates (needs --reason; "
                               "the breaches are recorded in the audit log)."),
    config: Path | None = typer.Option(None, "--config", help="Dataset config YAML whose 'monitor' section sets the "
                                       "gate thresholds (TOWER_MONITOR_CONFIG overrides it)."),
    dry_run: bool = _DRY_RUN,
    as_json: bool = _JSON,
) -> None:
    """Make an indexed, verified version production: alignment gates, then a registry transaction + one atomic Qdrant
    alias swap. A breached gate exits 10 unless --force --reason TEXT."""
    from tower_platform.cli.monitor import alignment_gate, load_cli_thresholds
    from tower_platform.registry.promotion import promote

    settings = get_settings()
    thresholds = load_cli_thresholds(settings=settings, dataset_config=config)
    who = actor or current_actor()
    with open_registry(settings=settings) as registry, open_vectors(settings) as vectors:
        gate = alignment_gate(registry, vectors, thresholds=thresholds, actor=who, show=not as_json)
        result = promote(registry, vectors, model, version, actor=who, reason=reason, dry_run=dry_run, gate=gate,
                         force=force)
    _print_promotion(result, verb="promoted", as_json=as_json)


@models_app.command("rollback")
def rollback_command(
    model: str = typer.Argument(..., help="Model name, e.g. movies."),
    actor: str | None = _ACTOR,
    reason: str | None = _REASON,
    dry_run: bool = _DRY_RUN,
    as_json: bool = _JSON,
) -> None:
    """Return production to the previous production version (from the audit log); the current one is rolled back."""
    from tower_platform.registry.promotion import rollback

    settings = get_settings()
    with open_registry(settings=settings) as registry, open_vectors(settings) as vectors:
        result = rollback(registry, vectors, model, actor=actor or current_actor(), reason=reason, dry_run=dry_run)
    _print_promotion(result, verb="rolled back", as_json=as_json)


@models_app.command("history")
def history_command(
    model: str = typer.Argument(..., help="Model name, e.g. movies."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the most recent N events."),
    as_json: bool = _JSON,
) -> None:
    """The audit log of a model, oldest first: registrations, indexing, promotions, rollbacks, retirements."""
    with open_registry() as registry:
        events = registry.audit_log(model, limit=limit)
    if as_json:
        print_json(events)
    else:
        print_table(
            f"{model}: history",
            ["id", "at", "action", "version", "status", "production", "actor", "reason"],
            [_event_row(e) for e in events],
        )


@models_app.command("gc")
def gc_command(
    model: str = typer.Argument(..., help="Model name, e.g. movies."),
    keep: int = typer.Option(3, "--keep", min=0, help="Keep the newest N versions (plus production and rollback target)."),
    actor: str | None = _ACTOR,
    reason: str | None = _REASON,
    dry_run: bool = _DRY_RUN,
    as_json: bool = _JSON,
) -> None:
    """Retire old versions: delete their Qdrant collections and artifact folders (never production or its rollback target)."""
    from tower_platform.registry.promotion import gc

    settings = get_settings()
    with open_registry(settings=settings) as registry, open_vectors(settings) as vectors:
        result = gc(
            registry,
            vectors,
            model,
            keep=keep,
            artifacts_root=settings.artifacts_dir,
            dry_run=dry_run,
            actor=actor or current_actor(),
            reason=reason,
        )
    if as_json:
        print_json(result)
        return
    verb = "would retire" if dry_run else "retired"
    print_table(
        f"{model}: gc {verb} {len(result.retired)} version(s); kept {list(result.kept)}",
        ["version", "status before", "collection deleted", "artifact folder deleted"],
        [[r.version, r.status, r.collection, r.artifact_dir] for r in result.retired],
    )


@models_app.command("serving-bundle")
def serving_bundle_command(
    model: str = typer.Argument(..., help="Model name, e.g. movies."),
    version: int | None = typer.Option(None, "--version", min=1, help="Version to bundle (default: production)."),
    out: Path = typer.Option(..., "--out", help="Folder to write (refused when it exists and is not empty)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty --out folder."),
    dry_run: bool = _DRY_RUN,
    as_json: bool = _JSON,
) -> None:
    """Write what a service needs to serve a version without this platform: query.onnx, manifest.json and a
    feature_store.yaml that Feast alone loads (see "Serving from another service" in the README)."""
    from tower_platform.cli.context import feature_store
    from tower_platform.serving.bundle import write_serving_bundle

    settings = get_settings()
    with open_registry(settings=settings) as registry, open_vectors(settings) as vectors:
        bundle = write_serving_bundle(registry, vectors, feature_store(settings), model=model, version=version,
                                      out=out, force=force, dry_run=dry_run)
    manifest = bundle.manifest
    if as_json:
        print_json({"folder": str(bundle.folder), "dry_run": bundle.dry_run, "manifest": manifest})
        return
    print_mapping(
        f"{'dry run: would write' if bundle.dry_run else 'wrote'} the serving bundle of {model} "
        f"v{manifest['version']} to {bundle.folder}",
        {
            "files": ", ".join(f"{name} ({entry['sha256'][:12]}…)" for name, entry in manifest["files"].items())
                     + ", manifest.json",
            "feature service": f"{manifest['features']['feature_service']} (full feature names)",
            "vectors": f"{manifest['vectors']['kind']}: alias '{manifest['vectors']['alias']}' -> "
                       f"{manifest['vectors']['collection']}",
            "exclusion": manifest["exclusion"]["feature"],
            "version check": f"payload.{manifest['version_check']['payload_field']} == {manifest['version']}",
        },
    )
