"""The registry's tables (SQLAlchemy 2.0 ORM). Rows never leave :mod:`tower_platform.registry.store`.

    models 1──* model_versions 1──0..1 collections
       │              ▲  │
       ├──* aliases ──┘  └──* alignment_reports 1──* alignment_segments
       │                      (one report per version and run; one segment row per category / popularity bucket,
       │                       plus one for the pooled small categories)
       ├──* audit_log            (append-only: the store never updates or deletes a row)
       └──* promotion_intents    (one per promotion, rollback or realignment; at most one pending per model)

(PK (model_id, alias) -> version in ``aliases``; "production" is the one alias in use.)

A promotion intent is committed before the vector store's alias moves and resolved after it, in the transaction that
moves the production alias row and writes the audit event (:mod:`tower_platform.registry.intents`): a process killed
in between leaves a ``pending`` intent that every command sees and ``towerctl models reconcile`` resolves. ``pending``
is TRUE exactly while ``state`` is ``pending`` (NULL otherwise), so the unique (model_id, pending) admits one pending
intent per model and any number of resolved ones on SQLite and PostgreSQL alike.

Production is recorded once, as the ``production`` alias row. ``model_versions.status`` stores the other states; the
version the alias names is shown as ``production`` (:func:`tower_platform.registry.conversion.to_model_version`), and
its stored status stays ``indexed``. Migration 0003 turned the stored ``production`` statuses of older registries into
``indexed``; the CHECK constraint still admits the old value so that a downgrade can write it back.

Lifecycle of a version (the status a caller sees)::

    registered ──mark_indexed──▶ indexed ──promote──▶ production ──promote another──▶ indexed
                                    ▲                     │
                                    └─ re-verify ─ rolled_back ◀──rollback──┘
    any status but production ──gc──▶ retired

Types are portable to SQLite and PostgreSQL: ``JSON`` (JSON on both), ``DateTime(timezone=True)`` (timestamptz on
PostgreSQL; on SQLite the store treats what it reads back as UTC). Constraint names follow the naming convention in
:data:`metadata`, so migrations name them the same way on every database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

STATUSES: tuple[str, ...] = ("registered", "indexed", "production", "rolled_back", "retired")  # what callers see
PRODUCTION_STATUS = "production"  # shown for the version the production alias row names; never stored (0003)
STORED_STATUSES: tuple[str, ...] = tuple(s for s in STATUSES if s != PRODUCTION_STATUS)
PRODUCTION_ALIAS = "production"  # the registry alias row that mirrors the Qdrant alias <model>


def utc_now() -> datetime:
    return datetime.now(UTC)


def _status_check() -> str:
    return "status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")"


class Base(DeclarativeBase):
    metadata = metadata
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        CheckConstraint(_status_check(), name="status"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), default="registered")
    query_onnx_path: Mapped[str] = mapped_column(Text)
    query_onnx_sha256: Mapped[str] = mapped_column(String(64))
    item_onnx_path: Mapped[str] = mapped_column(Text)
    item_onnx_sha256: Mapped[str] = mapped_column(String(64))
    spec_path: Mapped[str] = mapped_column(Text)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    feature_service: Mapped[str] = mapped_column(String(256))
    features: Mapped[Any] = mapped_column(JSON, nullable=False)
    training_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(128))
    window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    estimator_path: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    created_by: Mapped[str] = mapped_column(String(128))


class CollectionRow(Base):
    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"), unique=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    point_count: Mapped[int] = mapped_column(Integer)
    dimension: Mapped[int] = mapped_column(Integer)
    distance: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AliasRow(Base):
    __tablename__ = "aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class AuditEventRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), index=True)
    version: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


INTENT_ACTIONS: tuple[str, ...] = ("promote", "rollback", "realign")
INTENT_STATES: tuple[str, ...] = ("pending", "completed", "aborted")


def _in_check(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class PromotionIntentRow(Base):
    """One move of the production alias, recorded before the move and resolved after it.

    ``from_collection`` is where the vector store's alias pointed when the intent began (None: no alias), and
    ``to_collection`` where it is to point (None: the alias is to be removed; only a realignment does that).
    """

    __tablename__ = "promotion_intents"
    __table_args__ = (
        UniqueConstraint("model_id", "pending"),
        CheckConstraint(_in_check("action", INTENT_ACTIONS), name="action"),
        CheckConstraint(_in_check("state", INTENT_STATES), name="state"),
        CheckConstraint(
            "(state = 'pending' AND pending = true) OR (state <> 'pending' AND pending IS NULL)",
            name="pending_flag",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"))
    action: Mapped[str] = mapped_column(String(16))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    from_collection: Mapped[str | None] = mapped_column(String(256))
    to_collection: Mapped[str | None] = mapped_column(String(256))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)  # the audit event's details, written on completion
    state: Mapped[str] = mapped_column(String(16), default="pending")
    pending: Mapped[bool | None] = mapped_column(Boolean)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolution: Mapped[str | None] = mapped_column(Text)  # how it ended, in words
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    audit_event_id: Mapped[int | None] = mapped_column(ForeignKey("audit_log.id", ondelete="RESTRICT"))


SEGMENT_KINDS: tuple[str, ...] = ("category", "popularity", "pooled")  # pooled: migration 0005


def _segment_kind_check() -> str:
    return "kind IN (" + ", ".join(f"'{k}'" for k in SEGMENT_KINDS) + ")"


class AlignmentReportRow(Base):
    """One category-alignment report of one version (``run`` counts the reports of that version from 1)."""

    __tablename__ = "alignment_reports"
    __table_args__ = (
        UniqueConstraint("model_version_id", "run"),
        CheckConstraint("run >= 1", name="run_positive"),
        CheckConstraint("k >= 1", name="k_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"), index=True)
    run: Mapped[int] = mapped_column(Integer)
    k: Mapped[int] = mapped_column(Integer)
    against_version: Mapped[int | None] = mapped_column(Integer)
    collection: Mapped[str] = mapped_column(String(256))
    major_category: Mapped[str | None] = mapped_column(String(256))
    n_items: Mapped[int] = mapped_column(Integer)
    n_queries: Mapped[int] = mapped_column(Integer)
    n_skipped: Mapped[int] = mapped_column(Integer)
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSON)
    breaches: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    created_by: Mapped[str] = mapped_column(String(128))


class AlignmentSegmentRow(Base):
    """The figures of one category (``kind`` = category), popularity bucket (popularity) or the pooled small
    categories (pooled) of a report; ``pooled`` flags a category judged inside the pooled segment (migration 0005)."""

    __tablename__ = "alignment_segments"
    __table_args__ = (
        UniqueConstraint("report_id", "kind", "segment"),
        CheckConstraint(_segment_kind_check(), name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("alignment_reports.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    segment: Mapped[str] = mapped_column(String(256))
    item_count: Mapped[int] = mapped_column(Integer)
    interaction_share: Mapped[float] = mapped_column(Float)
    alignment_distance: Mapped[float] = mapped_column(Float)
    relative_alignment: Mapped[float | None] = mapped_column(Float)
    mean_norm: Mapped[float] = mapped_column(Float)
    centroid_norm: Mapped[float] = mapped_column(Float)
    n_queries: Mapped[int] = mapped_column(Integer)
    recall: Mapped[float | None] = mapped_column(Float)
    ndcg: Mapped[float | None] = mapped_column(Float)
    coverage: Mapped[float] = mapped_column(Float)
    deltas: Mapped[dict[str, Any]] = mapped_column(JSON)
    pooled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


__all__ = [
    "PRODUCTION_ALIAS",
    "SEGMENT_KINDS",
    "STATUSES",
    "AlignmentReportRow",
    "AlignmentSegmentRow",
    "AliasRow",
    "AuditEventRow",
    "Base",
    "INTENT_ACTIONS",
    "INTENT_STATES",
    "PromotionIntentRow",
    "CollectionRow",
    "ModelRow",
    "ModelVersionRow",
    "metadata",
    "utc_now",
]
