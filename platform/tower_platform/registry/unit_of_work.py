"""One model's rows inside one registry transaction.

:meth:`SqlRegistryStore.locked_model` yields a :class:`ModelUnitOfWork` whose model row is locked (PostgreSQL:
``SELECT ... FOR UPDATE``; SQLite: the transaction began with ``BEGIN IMMEDIATE``); the store's read methods use
an unlocked one. Everything written here commits or rolls back with the transaction that owns the session.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tower_platform.errors import ConflictError, NotFoundError
from tower_platform.registry.conversion import to_audit_event, to_model, to_model_version, to_promotion_intent
from tower_platform.registry import alignment_records
from tower_platform.registry.entities import AlignmentReport, AuditEvent, Model, ModelVersion, PromotionIntent
from tower_platform.registry.schema import (
    INTENT_ACTIONS,
    PRODUCTION_ALIAS,
    STORED_STATUSES,
    AliasRow,
    AuditEventRow,
    CollectionRow,
    ModelRow,
    ModelVersionRow,
    PromotionIntentRow,
    utc_now,
)


def versions_hint(model: str) -> str:
    return f"see `towerctl models list {model}`"


class ModelUnitOfWork:
    def __init__(self, session: Session, *, model_row: ModelRow, home_dir: Path | None = None) -> None:
        self._session = session
        self._model = model_row
        self._home_dir = home_dir  # relative artifact paths resolve against it

    @property
    def model(self) -> str:
        return self._model.name

    # -- reads --------------------------------------------------------------------------------------------------
    def summary(self) -> Model:
        production = self.production()
        latest, count = self._session.execute(
            select(func.max(ModelVersionRow.version), func.count(ModelVersionRow.id)).where(
                ModelVersionRow.model_id == self._model.id
            )
        ).one()
        return to_model(
            self._model,
            production_version=production.version if production else None,
            latest_version=latest,
            version_count=int(count),
        )

    def version(self, version: int) -> ModelVersion:
        row = self._version_row(version)
        return to_model_version(row, model=self.model, home_dir=self._home_dir,
                                collection=self._collection_row(row.id), production=row.id == self._production_row_id())

    def versions(self) -> list[ModelVersion]:
        rows = self._session.scalars(
            select(ModelVersionRow).where(ModelVersionRow.model_id == self._model.id).order_by(ModelVersionRow.version)
        ).all()
        collections = {
            c.model_version_id: c
            for c in self._session.scalars(
                select(CollectionRow).where(CollectionRow.model_version_id.in_([r.id for r in rows]))
            ).all()
        }
        production = self._production_row_id()
        return [to_model_version(r, model=self.model, home_dir=self._home_dir, collection=collections.get(r.id),
                                 production=r.id == production) for r in rows]

    def production(self) -> ModelVersion | None:
        """The version the production alias row names: the one record of which version is production."""
        row_id = self._production_row_id()
        if row_id is None:
            return None
        row = self._session.get(ModelVersionRow, row_id)
        assert row is not None  # foreign key
        return to_model_version(row, model=self.model, home_dir=self._home_dir,
                                collection=self._collection_row(row.id), production=True)

    def _production_row_id(self) -> int | None:
        alias = self._session.get(AliasRow, (self._model.id, PRODUCTION_ALIAS))
        return None if alias is None else alias.model_version_id

    def next_version(self) -> int:
        latest = self._session.scalar(
            select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model_id == self._model.id)
        )
        return int(latest or 0) + 1

    def audit_events(self, *, limit: int | None = None) -> list[AuditEvent]:
        """Oldest first; with ``limit``, the most recent ``limit`` events (still oldest first)."""
        query = select(AuditEventRow).where(AuditEventRow.model_id == self._model.id).order_by(AuditEventRow.id.desc())
        if limit is not None:
            query = query.limit(limit)
        rows = list(reversed(self._session.scalars(query).all()))
        return [to_audit_event(r, model=self.model) for r in rows]

    # -- writes -------------------------------------------------------------------------------------------------
    def add_version(self, *, version: int, **fields: Any) -> ModelVersion:
        row = ModelVersionRow(model_id=self._model.id, version=version, status="registered", **fields)
        self._session.add(row)
        self._session.flush()
        return to_model_version(row, model=self.model, home_dir=self._home_dir, collection=None)

    def set_status(self, version: int, status: str) -> None:
        if status not in STORED_STATUSES:  # production is the alias row (set_production), never a stored status
            raise ValueError(f"status {status!r} is not one of {STORED_STATUSES}")
        self._version_row(version).status = status
        self._session.flush()

    def set_production(self, version: int) -> None:
        """Point the registry's production alias at ``version`` (the row keyed by (model, alias))."""
        row = self._version_row(version)
        alias = self._session.get(AliasRow, (self._model.id, PRODUCTION_ALIAS))
        if alias is None:
            self._session.add(AliasRow(model_id=self._model.id, alias=PRODUCTION_ALIAS, model_version_id=row.id))
        else:
            alias.model_version_id = row.id
            alias.updated_at = utc_now()
        self._session.flush()

    def record_collection(
        self, version: int, *, name: str, point_count: int, dimension: int, distance: str, verified: bool
    ) -> ModelVersion:
        row = self._version_row(version)
        collection = self._collection_row(row.id)
        now = utc_now()
        if collection is None:
            collection = CollectionRow(model_version_id=row.id, name=name, created_at=now)
            self._session.add(collection)
        elif collection.name != name:
            raise ConflictError(
                f"Model '{self.model}' version {version} already has collection '{collection.name}', not '{name}'; "
                "write embeddings under the recorded name."
            )
        collection.point_count = int(point_count)
        collection.dimension = int(dimension)
        collection.distance = distance
        collection.verified_at = now if verified else None
        collection.deleted_at = None
        self._session.flush()
        return to_model_version(row, model=self.model, home_dir=self._home_dir, collection=collection,
                                production=row.id == self._production_row_id())

    def mark_collection_deleted(self, version: int, *, at: datetime | None = None) -> None:
        collection = self._collection_row(self._version_row(version).id)
        if collection is not None:
            collection.deleted_at = at or utc_now()
            self._session.flush()

    def audit(
        self,
        action: str,
        *,
        version: int | None,
        actor: str,
        reason: str | None = None,
        from_status: str | None = None,
        to_status: str | None = None,
        from_version: int | None = None,
        to_version: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        row = AuditEventRow(
            model_id=self._model.id,
            version=version,
            action=action,
            from_status=from_status,
            to_status=to_status,
            from_version=from_version,
            to_version=to_version,
            actor=actor,
            reason=reason,
            details=dict(details or {}),
            created_at=utc_now(),
        )
        self._session.add(row)
        self._session.flush()
        return to_audit_event(row, model=self.model)

    # -- promotion intents ----------------------------------------------------------------------------------------
    def pending_intent(self) -> PromotionIntent | None:
        """The model's pending promotion intent (at most one: the unique (model_id, pending) holds it to that)."""
        row = self._pending_intent_row()
        return None if row is None else to_promotion_intent(row, model=self.model)

    def intents(self, *, limit: int | None = None) -> list[PromotionIntent]:
        """Oldest first; with ``limit``, the most recent ``limit`` intents (still oldest first)."""
        query = (
            select(PromotionIntentRow)
            .where(PromotionIntentRow.model_id == self._model.id)
            .order_by(PromotionIntentRow.id.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        return [to_promotion_intent(r, model=self.model) for r in reversed(self._session.scalars(query).all())]

    def begin_intent(
        self,
        action: str,
        *,
        from_version: int | None,
        to_version: int | None,
        from_collection: str | None,
        to_collection: str | None,
        actor: str,
        reason: str | None,
        details: dict[str, Any],
    ) -> PromotionIntent:
        if action not in INTENT_ACTIONS:
            raise ValueError(f"intent action {action!r} is not one of {INTENT_ACTIONS}")
        pending = self.pending_intent()
        if pending is not None:
            raise ConflictError(
                f"Model '{self.model}' already has a pending {pending.describe()}; run "
                f"`towerctl models reconcile {self.model}` first."
            )
        row = PromotionIntentRow(
            model_id=self._model.id,
            action=action,
            from_version=from_version,
            to_version=to_version,
            from_collection=from_collection,
            to_collection=to_collection,
            actor=actor,
            reason=reason,
            details=dict(details),
            state="pending",
            pending=True,
            started_at=utc_now(),
        )
        self._session.add(row)
        self._session.flush()
        return to_promotion_intent(row, model=self.model)

    def resolve_intent(
        self, intent_id: int, *, state: str, resolution: str, resolved_by: str, audit_event_id: int | None = None
    ) -> PromotionIntent:
        """Mark a pending intent ``completed`` or ``aborted``; ConflictError when it is no longer pending."""
        if state not in ("completed", "aborted"):
            raise ValueError(f"an intent is resolved as completed or aborted, not {state!r}")
        row = self._session.get(PromotionIntentRow, intent_id)
        if row is None or row.model_id != self._model.id or row.state != "pending":
            raise ConflictError(
                f"Promotion intent #{intent_id} of model '{self.model}' is no longer pending (resolved meanwhile); "
                f"see `towerctl models list {self.model}`."
            )
        row.state = state
        row.pending = None
        row.resolved_at = utc_now()
        row.resolution = resolution
        row.resolved_by = resolved_by
        row.audit_event_id = audit_event_id
        self._session.flush()
        return to_promotion_intent(row, model=self.model)

    def _pending_intent_row(self) -> PromotionIntentRow | None:
        return self._session.scalar(
            select(PromotionIntentRow).where(
                PromotionIntentRow.model_id == self._model.id, PromotionIntentRow.state == "pending"
            )
        )

    # -- alignment reports ----------------------------------------------------------------------------------------
    def add_alignment_report(self, report: AlignmentReport, *, actor: str) -> AlignmentReport:
        """Store a report of ``report.version`` under the version's next run number."""
        return alignment_records.add_report(
            self._session, version_row=self._version_row(report.version), model=self.model, report=report, actor=actor
        )

    def alignment_reports(self, version: int | None = None) -> list[AlignmentReport]:
        """The reports of one version (or of every version), by version then run."""
        if version is not None:
            rows = [self._version_row(version)]
        else:
            rows = list(self._session.scalars(select(ModelVersionRow).where(ModelVersionRow.model_id == self._model.id)))
        return alignment_records.reports(self._session, model=self.model, version_rows=rows)

    # -- rows ---------------------------------------------------------------------------------------------------
    def _version_row(self, version: int) -> ModelVersionRow:
        row = self._session.scalar(
            select(ModelVersionRow).where(
                ModelVersionRow.model_id == self._model.id, ModelVersionRow.version == int(version)
            )
        )
        if row is None:
            raise NotFoundError(f"Model '{self.model}' has no version {version}; {versions_hint(self.model)}.")
        return row

    def _collection_row(self, model_version_id: int) -> CollectionRow | None:
        return self._session.scalar(select(CollectionRow).where(CollectionRow.model_version_id == model_version_id))
