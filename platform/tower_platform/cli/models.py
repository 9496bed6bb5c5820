"""``towerctl models list|show|register|promote|rollback|reconcile|history|gc``: model versions in the registry.

Read commands take ``--json``; commands that change state take ``--actor`` (default: the OS user) and ``--reason``,
both recorded in the audit log, and ``--dry-run`` (makes every check of the real run, changes nothing). ``list`` and
``show`` also open the vector store and flag a registry that disagrees with it (``tower_platform.cli.serving_check``);
promote, rollback and gc refuse then, and ``reconcile`` repairs.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from tower_platform.cli import serving_check
from tower_platform.cli.arguments import MODEL_ARGUMENT, checked_model_name, model_option
from tower_platform.cli.context import current_actor, open_registry, open_vectors
from tower_platform.cli.models_output import (
    LISTED_COLUMNS,
    VERSION_COLUMNS,
    event_row,
    listed_row,
    print_promotion,
    print_reconcile,
    version_payload,
    version_row,
)
from tower_platform.cli.output import err_console, print_json, print_mapping, print_table
from tower_platform.settings import get_settings

models_app = typer.Typer(
    no_args_is_help=True, help="Model versions: register, promote, roll back, reconcile, history, gc."
)


_ACTOR = typer.Option(None, "--actor", help="Who does this, for the audit log (default: the OS user).")
_REASON = typer.Option(None, "--reason", help="Why, for the audit log.")
_JSON = typer.Option(False, "--json", help="Print the result as JSON.")
_DRY_RUN = typer.Option(False, "--dry-run", help="Check and show what would happen; change nothing.")


@models_app.command("list")
def list_command(
    model: str | None = typer.Argument(None, help="A model name: list its versions instead of the models.",
                                      callback=checked_model_name),
    as_json: bool = _JSON,
) -> None:
    """List the registered models, or the versions of one model, each checked against the vector store."""
    settings = get_settings()
    with open_registry(settings=settings) as registry:
        if model is None:
            models = registry.list_models()
            states = serving_check.check_models(registry, settings, [m.name for m in models])
            if as_json:
                print_json([{**asdict(m), "serving": serving_check.as_json(states[m.name])} for m in models])
            else:
                print_table(
                    "models",
                    ["model", "production", "latest", "versions", "created", "serving"],
                    [[m.name, m.production_version, m.latest_version, m.version_count, m.created_at,
                      serving_check.summary(states[m.name])] for m in models],
                    highlight_rows={i for i, m in enumerate(models) if not getattr(states[m.name], "ok", True)},
                )
            return
        versions = registry.list_versions(model)
        state = serving_check.check_models(registry, settings, [model])[model]
    if as_json:
        print_json([{**version_payload(v), **serving_check.version_json(
            state, v.version, v.collection.name if v.collection else None)} for v in versions])
        return
    flagged = state is not None and not state.ok
    print_table(
        f"{model}: versions" + (f" ({serving_check.summary(state)})" if flagged else ""),
        LISTED_COLUMNS,
        [listed_row(v, state) for v in versions],
        highlight_rows={i for i, v in enumerate(versions) if state is not None and state.problems_of(v.version)},
    )


@models_app.command("show")
def show_command(
    model: str = MODEL_ARGUMENT,
    version: int | None = typer.Option(None, "--version", help="Version (default: production, else the latest)."),
    as_json: bool = _JSON,
) -> None:
    """Everything the registry records about one version: artifacts, features, window, collection, metrics, and
    whether the vector store serves what the registry says."""
    from tower_platform.cli.version_view import print_version
    from tower_platform.errors import NotFoundError

    settings = get_settings()
    with open_registry(settings=settings) as registry:
        if version is None:
            chosen = registry.production_version(model)
            if chosen is None:
                versions = registry.list_versions(model)
                if not versions:
                    raise NotFoundError(f"Model '{model}' has no versions yet; register one with `towerctl models register`.")
                chosen = versions[-1]
        else:
            chosen = registry.get_version(model, version)
        state = serving_check.check_models(registry, settings, [model])[model]
    if as_json:
        print_json({**version_payload(chosen), "serving": serving_check.as_json(state)})
        return
    print_version(chosen, state)


@models_app.command("register")
def register_command(
    artifact_dir: str = typer.Argument(..., help="Folder written by the export: query.onnx, item.onnx, spec.json."),
    model: str | None = model_option("Model name (default: the one in spec.json)."),
    actor: str | None = _ACTOR,
    reason: str | None = _REASON,
    dry_run: bool = _DRY_RUN,
    as_json: bool = _JSON,
) -> None:
    """Register an exported model folder as a new version (status registered) after checking its sha256s."""
    from tower_platform.registry.exported_model import read_exported_model
    from tower_platform.naming import check_model_name

    exported = read_exported_model(artifact_dir, model=model)
    check_model_name(exported.model)
    if dry_run:
        _register_dry_run(exported, actor=actor or current_actor(), reason=reason, as_json=as_json)
        return
    from tower_platform.pipeline.register import register_export

    with open_registry(write=True) as registry:
        created = register_export(registry, exported.folder, model=exported.model, actor=actor or current_actor(),
                                  reason=reason)
    if as_json:
        print_json(version_payload(created))
    else:
        print_table(
            f"registered {created.model} v{created.version}",
            VERSION_COLUMNS,
            [version_row(created)],
        )
        err_console.print(
            f"next: towerctl embeddings write {created.model} --version {created.version}", markup=False, highlight=False
        )


def _register_dry_run(exported: Any, *, actor: str, reason: str | None, as_json: bool) -> None:
    """Every check of the real registration (schema, name, sha256s, JSON fields, version number), nothing written."""
    from tower_platform.pipeline.register import plan_export_registration

    settings = get_settings()
    creates_schema = settings.database_url is None and _default_registry_is_empty(settings)
    if creates_schema:  # the real run creates the default schema first: the registry holds no version yet
        planned = plan_export_registration(None, exported.folder, model=exported.model, actor=actor, reason=reason)
    else:
        with open_registry(settings=settings) as registry:
            planned = plan_export_registration(registry, exported.folder, model=exported.model, actor=actor,
                                               reason=reason)
    if as_json:
        print_json({**version_payload(planned), "dry_run": True, "creates_schema": creates_schema})
        return
    print_table(f"dry run: would register {exported.folder} as {planned.model} v{planned.version}"
                + (" (creating the registry schema first)" if creates_schema else ""),
                VERSION_COLUMNS, [version_row(planned)])


def _default_registry_is_empty(settings: Any) -> bool:
    """True when the default SQLite file is absent or has no schema (read without creating the file)."""
    from tower_platform.registry.database import sqlite_file
    from tower_platform.registry.migration import current_state

    file = sqlite_file(settings.registry_url)
    return file is not None and (not file.is_file() or current_state(settings.registry_url).empty)


@models_app.command("promote")
def promote_command(
    model: str = MODEL_ARGUMENT,
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
        gate = alignment_gate(registry, vectors, thresholds=thresholds, actor=who, show=not as_json,
                              record=not dry_run)
        result = promote(registry, vectors, model, version, actor=who, reason=reason, dry_run=dry_run, gate=gate,
                         force=force)
    print_promotion(result, verb="promoted", as_json=as_json)


@models_app.command("rollback")
def rollback_command(
    model: str = MODEL_ARGUMENT,
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
    print_promotion(result, verb="rolled back", as_json=as_json)


@models_app.command("reconcile")
def reconcile_command(
    model: str = MODEL_ARGUMENT,
    actor: str | None = _ACTOR,
    reason: str | None = _REASON,
    dry_run: bool = _DRY_RUN,
    as_json: bool = _JSON,
) -> None:
    """Repair a promotion or rollback that a killed process left half-done, or an alias that disagrees with the
    registry: a pending intent is completed or aborted by where the alias points; the alias is then moved to the
    registry's production version. Exits 4 when something is left that only rewriting a collection can fix."""
    from tower_platform.errors import ConflictError
    from tower_platform.registry.reconcile import reconcile
    from tower_platform.registry.serving_state import repair_of

    settings = get_settings()
    with open_registry(settings=settings) as registry, open_vectors(settings) as vectors:
        result = reconcile(registry, vectors, model, actor=actor or current_actor(), reason=reason, dry_run=dry_run)
    print_reconcile(result, as_json=as_json)
    if result.remaining:
        raise ConflictError(
            f"Model '{model}' still disagrees with the vector store after reconcile "
            f"({'; '.join(p.fact for p in result.remaining)}); {repair_of(result.remaining)}."
        )


@models_app.command("history")
def history_command(
    model: str = MODEL_ARGUMENT,
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
            [event_row(e) for e in events],
        )


@models_app.command("gc")
def gc_command(
    model: str = MODEL_ARGUMENT,
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
