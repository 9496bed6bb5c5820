"""ORM rows to the frozen entities handed to callers (rows never leave the store)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from tower_platform.paths import resolved_path
from tower_platform.registry.entities import (
    Artifact,
    AuditEvent,
    Collection,
    Model,
    ModelVersion,
    PromotionIntent,
)
from tower_platform.registry.schema import (
    PRODUCTION_STATUS,
    AuditEventRow,
    CollectionRow,
    ModelRow,
    ModelVersionRow,
    PromotionIntentRow,
)
from tower_platform.timestamp import as_utc  # SQLite returns naive datetimes: the store writes UTC


def to_collection(row: CollectionRow | None) -> Collection | None:
    if row is None:
        return None
    return Collection(
        name=row.name,
        point_count=row.point_count,
        dimension=row.dimension,
        distance=row.distance,
        created_at=as_utc(row.created_at),  # type: ignore[arg-type]
        verified_at=as_utc(row.verified_at),
        deleted_at=as_utc(row.deleted_at),
    )


def to_model_version(
    row: ModelVersionRow, *, model: str, collection: CollectionRow | None, production: bool = False,
    home_dir: Path | None = None,
) -> ModelVersion:
    """``production``: the production alias row names this version (its status is shown as ``production``).
    Artifact paths stored relative to the home are made absolute against ``home_dir``."""

    def path(stored: str) -> str:
        return resolved_path(stored, home_dir)

    return ModelVersion(
        model=model,
        version=row.version,
        status=PRODUCTION_STATUS if production else row.status,
        artifacts=(
            Artifact("query.onnx", path(row.query_onnx_path), row.query_onnx_sha256),
            Artifact("item.onnx", path(row.item_onnx_path), row.item_onnx_sha256),
            Artifact("spec.json", path(row.spec_path), row.spec_sha256),
        ),
        feature_service=row.feature_service,
        features=row.features,
        training_config=dict(row.training_config or {}),
        fingerprint=row.fingerprint,
        window_start=as_utc(row.window_start),
        window_end=as_utc(row.window_end),
        estimator_path=None if row.estimator_path is None else path(row.estimator_path),
        metrics=dict(row.metrics or {}),
        created_at=as_utc(row.created_at),  # type: ignore[arg-type]
        created_by=row.created_by,
        collection=to_collection(collection),
    )


def planned_version(model: str, version: int, fields: dict[str, Any]) -> ModelVersion:
    """The version a registration would record (``fields``: the model_versions columns), from a row never stored."""
    return to_model_version(ModelVersionRow(version=version, status="registered", **fields), model=model,
                            collection=None)


def to_model(
    row: ModelRow, *, production_version: int | None, latest_version: int | None, version_count: int
) -> Model:
    return Model(
        name=row.name,
        description=row.description,
        created_at=as_utc(row.created_at),  # type: ignore[arg-type]
        production_version=production_version,
        latest_version=latest_version,
        version_count=version_count,
    )


def to_audit_event(row: AuditEventRow, *, model: str) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        model=model,
        version=row.version,
        action=row.action,
        from_status=row.from_status,
        to_status=row.to_status,
        from_version=row.from_version,
        to_version=row.to_version,
        actor=row.actor,
        reason=row.reason,
        details=dict(row.details or {}),
        created_at=as_utc(row.created_at),
    )


def to_promotion_intent(row: PromotionIntentRow, *, model: str) -> PromotionIntent:
    return PromotionIntent(
        id=row.id,
        model=model,
        action=row.action,
        from_version=row.from_version,
        to_version=row.to_version,
        from_collection=row.from_collection,
        to_collection=row.to_collection,
        actor=row.actor,
        reason=row.reason,
        details=dict(row.details or {}),
        state=row.state,
        started_at=as_utc(row.started_at),  # type: ignore[arg-type]
        resolved_at=as_utc(row.resolved_at),
        resolution=row.resolution,
        resolved_by=row.resolved_by,
        audit_event_id=row.audit_event_id,
    )
