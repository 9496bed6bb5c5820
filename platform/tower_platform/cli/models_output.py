"""How ``towerctl models`` prints what it did: version rows, audit events, promotion and reconcile results."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from tower_platform.cli import serving_check
from tower_platform.cli.output import out_console, print_json, print_mapping, print_table

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.entities import AuditEvent, ModelVersion
    from tower_platform.registry.promotion import PromotionResult
    from tower_platform.registry.reconcile import ReconcileResult
    from tower_platform.registry.serving_state import ServingState


VERSION_COLUMNS = ["version", "status", "collection", "points", "verified", "created (UTC)"]


def version_row(v: ModelVersion) -> list[Any]:
    collection = v.collection
    return [
        v.version,
        v.status,
        collection.name if collection else None,
        collection.point_count if collection else None,
        "yes" if collection and collection.verified else "no",
        v.created_at.strftime("%Y-%m-%d %H:%M"),
    ]


LISTED_COLUMNS = ["version", "status", "collection", "points", "verified", "alias", "created (UTC)", "problems"]


def listed_row(v: ModelVersion, state: ServingState | None) -> list[Any]:
    """A row of ``models list MODEL``: ``verified`` says ``missing`` when the vector store lacks the collection."""
    name = v.collection.name if v.collection else None
    verified, alias = serving_check.collection_cells(state, name, verified=bool(v.collection and v.collection.verified))
    problems = serving_check.short(state.problems_of(v.version)) if state is not None else ""
    return [v.version, v.status, name, v.collection.point_count if v.collection else None, verified, alias,
            v.created_at.strftime("%Y-%m-%d %H:%M"), problems]


def version_payload(v: ModelVersion) -> dict[str, Any]:
    payload = asdict(v)
    payload["artifacts"] = {a["name"]: {"path": a["path"], "sha256": a["sha256"]} for a in payload["artifacts"]}
    return payload


def event_row(e: AuditEvent) -> list[Any]:
    statuses = f"{e.from_status or '-'} -> {e.to_status}" if e.to_status else None
    versions = f"{e.from_version or '-'} -> {e.to_version}" if e.to_version else None
    return [e.id, e.created_at, e.action, e.version, statuses, versions, e.actor, e.reason]


def print_promotion(result: PromotionResult, *, verb: str, as_json: bool) -> None:
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
            "gates": gate_summary(result),
        },
    )


def gate_summary(result: PromotionResult) -> str | None:
    verdict = result.verdict
    if verdict is None:
        return None
    if not (verdict.details or {}).get("measured", True):
        return f"{verdict.gate}: not measured ({(verdict.details or {}).get('note')})"
    if verdict.passed:
        return f"{verdict.gate}: passed"
    return f"{verdict.gate}: {len(verdict.breaches)} breach(es), forced" if result.forced else None


def print_reconcile(result: ReconcileResult, *, as_json: bool) -> None:
    if as_json:
        print_json({
            "model": result.model, "dry_run": result.dry_run, "changed": result.changed,
            "before": result.before.to_dict(),
            "steps": [
                {"action": s.action, "description": s.description, "audit_event": s.event.id if s.event else None}
                for s in result.steps
            ],
            "remaining": [p.to_dict() for p in result.remaining],
        })
        return
    if not result.steps:
        verdict = "registry and vector store agree" if result.before.ok else "nothing reconcile itself can repair"
        out_console.print(f"{result.model}: nothing to reconcile ({verdict})", markup=False, highlight=False)
        return
    title = f"{result.model}: {'dry run: reconcile would' if result.dry_run else 'reconciled'}"
    print_table(title, ["step", "what", "audit event"],
                [(s.action, s.description, s.event.id if s.event else None) for s in result.steps])
