"""``SqlRegistryStore``: the registry of models, versions, collections, aliases and the audit log.

SQLite (the embedded default) and PostgreSQL (psycopg 3) behind one class. Every method runs in a managed session
that commits or rolls back and translates database errors (``sqlalchemy.exc`` never leaves this package). Opening
the store refuses a schema that is not at the packaged Alembic head (:class:`SchemaOutOfDateError` naming
``towerctl db upgrade``); the store itself never migrates.

Callers receive frozen dataclasses (:mod:`tower_platform.registry.entities`). Promotion and rollback use
:meth:`SqlRegistryStore.locked_model`, a transaction with the model row locked, so that concurrent promoters of
one model run one after the other.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tower_platform.errors import ConflictError, NotFoundError, SchemaOutOfDateError, UsageError
from tower_platform.naming import DISTANCES, check_model_name
from tower_platform.registry.database import (
    create_registry_engine,
    redacted_url,
    sqlite_file,
    translate_db_error,
    writer_engine,
)
from tower_platform.registry.entities import AlignmentReport, AuditEvent, Model, ModelVersion
from tower_platform.registry.conversion import planned_version
from tower_platform.registry.registration import registration_fields
from tower_platform.registry.migration import UPGRADE_COMMAND, require_head, schema_state
from tower_platform.registry.promotion_lock import DEFAULT_TIMEOUT_S, promotion_lock
from tower_platform.registry.schema import ModelRow, utc_now
from tower_platform.registry.unit_of_work import ModelUnitOfWork


class SqlRegistryStore:
    """``home_dir`` ($TOWER_HOME): artifact paths under it are stored relative to it and resolved against it on
    read, so a copied, moved or restored home reads its own files. Without it (library use) paths are stored absolute,
    which any reader resolves the same way."""

    def __init__(self, url: str, *, check_schema: bool = True, home_dir: str | Path | None = None) -> None:
        self.url = url
        file = sqlite_file(url)
        self.home_dir = Path(home_dir).expanduser().resolve() if home_dir is not None else None
        if check_schema and file is not None and not file.is_file():
            raise SchemaOutOfDateError(
                f"The registry database {file} does not exist yet; run `{UPGRADE_COMMAND}` to create it."
            )
        self._engine = create_registry_engine(url)
        self._writer = writer_engine(self._engine)
        self._postgres = self._engine.dialect.name == "postgresql"
        if check_schema:
            self.check_schema()

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def check_schema(self) -> None:
        try:
            with self._engine.connect() as connection:
                state = schema_state(connection)
        except sa_exc.SQLAlchemyError as exc:
            raise translate_db_error(exc, url=self.url) from exc
        require_head(state, url=self.url)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> SqlRegistryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlRegistryStore({redacted_url(self.url)!r})"

    # -- sessions -----------------------------------------------------------------------------------------------
    @contextmanager
    def _session(self, *, write: bool) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception, database errors translated."""
        session = Session(self._writer if write else self._engine, expire_on_commit=False, autoflush=False)
        try:
            with session.begin():
                yield session
        except sa_exc.SQLAlchemyError as exc:
            raise translate_db_error(exc, url=self.url) from exc
        finally:
            session.close()

    @contextmanager
    def _model(self, name: str, *, write: bool, lock: bool) -> Iterator[ModelUnitOfWork]:
        with self._session(write=write) as session:
            query = select(ModelRow).where(ModelRow.name == name)
            if lock and self._postgres:
                query = query.with_for_update()
            row = session.scalar(query)
            if row is None:
                raise NotFoundError(f"Model '{name}' is not registered; see `towerctl models list`.")
            yield ModelUnitOfWork(session, model_row=row, home_dir=self.home_dir)

    @contextmanager
    def locked_model(self, name: str) -> Iterator[ModelUnitOfWork]:
        """A transaction with the model row locked (PostgreSQL ``FOR UPDATE``; SQLite ``BEGIN IMMEDIATE``).

        Concurrent holders of the same model run one after the other; the block's writes commit together on exit
        or roll back together when it raises.
        """
        with self._model(name, write=True, lock=True) as unit:
            yield unit

    @contextmanager
    def reading(self, name: str) -> Iterator[ModelUnitOfWork]:
        """One read-only transaction on a model's rows (a consistent snapshot; nothing is locked or written)."""
        with self._model(name, write=False, lock=False) as unit:
            yield unit

    @contextmanager
    def promotion_lock(self, name: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
        """Held around a whole promotion, rollback, reconcile or gc of ``name`` (see ``registry.promotion_lock``)."""
        with promotion_lock(self._engine, url=self.url, model=name, timeout_s=timeout_s):
            yield

    # -- models -------------------------------------------------------------------------------------------------
    def ensure_model(self, name: str, *, description: str | None = None) -> Model:
        check_model_name(name)
        insert = postgresql_insert if self._postgres else sqlite_insert
        statement = (
            insert(ModelRow)
            .values(name=name, description=description, created_at=utc_now())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        with self._session(write=True) as session:
            session.execute(statement)
        return self.get_model(name)

    def get_model(self, name: str) -> Model:
        with self._model(name, write=False, lock=False) as unit:
            return unit.summary()

    def list_models(self) -> list[Model]:
        with self._session(write=False) as session:
            rows = session.scalars(select(ModelRow).order_by(ModelRow.name)).all()
            return [ModelUnitOfWork(session, model_row=row, home_dir=self.home_dir).summary() for row in rows]

    # -- versions -----------------------------------------------------------------------------------------------
    def register_version(
        self,
        model: str,
        *,
        artifacts: Mapping[str, tuple[str, str]],
        feature_service: str,
        features: Any,
        training_config: Mapping[str, Any],
        fingerprint: str,
        time_window: tuple[datetime | None, datetime | None] | None,
        estimator_path: str | None,
        metrics: Mapping[str, Any],
        actor: str,
        reason: str | None = None,
        version: int | None = None,
        dry_run: bool = False,
    ) -> ModelVersion:
        """Record a new version (status ``registered``) after checking every artifact's sha256.

        ``dry_run`` makes every check the real run makes (name, artifacts and their sha256, JSON fields, the version
        number free) and returns the version it would record, writing nothing.

        ``artifacts`` maps each of ``query.onnx``, ``item.onnx``, ``spec.json`` to (path, sha256). The version number
        is the next free one (race-safe: taken under the model lock) unless ``version`` asks for a specific one,
        which must be free.
        """
        fields = registration_fields(
            model, artifacts=artifacts, feature_service=feature_service, features=features,
            training_config=training_config, fingerprint=fingerprint, time_window=time_window,
            estimator_path=estimator_path, metrics=metrics, actor=actor, version=version, home_dir=self.home_dir,
        )
        if dry_run:
            return self._planned_version(model, version, fields)
        self.ensure_model(model)
        with self.locked_model(model) as unit:
            number = self._version_number(unit, version, model=model)
            created = unit.add_version(version=number, **fields)
            unit.audit(
                "register",
                version=number,
                actor=actor,
                reason=reason,
                to_status="registered",
                details={"fingerprint": str(fingerprint), "feature_service": str(feature_service)},
            )
        return created

    def _planned_version(self, model: str, version: int | None, fields: dict[str, Any]) -> ModelVersion:
        """What ``register_version`` would record, read without writing (a model not registered yet starts at 1)."""
        try:
            with self._model(model, write=False, lock=False) as unit:
                number = self._version_number(unit, version, model=model)
        except NotFoundError:
            number = self._version_number(None, version, model=model)
        return planned_version(model, number, fields)

    @classmethod
    def _version_number(cls, unit: ModelUnitOfWork | None, version: int | None, *, model: str) -> int:
        """The next free number, or ``version`` when it is free (``unit`` None: the model has no versions yet)."""
        number = (unit.next_version() if unit is not None else 1) if version is None else int(version)
        if version is not None and number < 1:
            raise UsageError(f"Version {number} for model '{model}' is not allowed; versions start at 1.")
        if version is not None and unit is not None and cls._version_exists(unit, number):
            raise ConflictError(
                f"Model '{model}' already has a version {number}; register without a version number to get "
                f"the next one ({unit.next_version()})."
            )
        return number

    @staticmethod
    def _version_exists(unit: ModelUnitOfWork, number: int) -> bool:
        try:
            unit.version(number)
        except NotFoundError:
            return False
        return True

    def get_version(self, model: str, version: int) -> ModelVersion:
        with self._model(model, write=False, lock=False) as unit:
            return unit.version(version)

    def list_versions(self, model: str) -> list[ModelVersion]:
        with self._model(model, write=False, lock=False) as unit:
            return unit.versions()

    def next_version(self, model: str) -> int:
        """The number the next registered version of ``model`` gets (1 for a model not registered yet)."""
        try:
            with self._model(model, write=False, lock=False) as unit:
                return unit.next_version()
        except NotFoundError:
            return 1

    def production_version(self, model: str) -> ModelVersion | None:
        with self._model(model, write=False, lock=False) as unit:
            return unit.production()

    def audit_log(self, model: str, *, limit: int | None = None) -> list[AuditEvent]:
        """The model's audit events, oldest first (the most recent ``limit`` when given)."""
        with self._model(model, write=False, lock=False) as unit:
            return unit.audit_events(limit=limit)

    # -- collections and indexing -------------------------------------------------------------------------------
    def record_collection(
        self,
        model: str,
        version: int,
        *,
        name: str,
        point_count: int,
        dimension: int,
        distance: str,
        verified: bool,
        actor: str = "system",
    ) -> ModelVersion:
        """Record (or update) the Qdrant collection of a version; ``verified`` stamps verified_at now."""
        if distance not in DISTANCES:
            raise UsageError(f"Distance {distance!r} for collection '{name}' is not one of {DISTANCES}.")
        with self.locked_model(model) as unit:
            updated = unit.record_collection(
                version, name=name, point_count=point_count, dimension=dimension, distance=distance, verified=verified
            )
            unit.audit(
                "collection",
                version=version,
                actor=actor,
                details={"collection": name, "point_count": int(point_count), "verified": bool(verified)},
            )
        return updated

    def mark_indexed(self, model: str, version: int, *, actor: str, reason: str | None = None) -> ModelVersion:
        """registered / rolled_back -> indexed, once the version's collection is recorded and verified.

        Safe to re-run: an indexed or production version is returned unchanged, without an audit event.
        """
        with self.locked_model(model) as unit:
            current = unit.version(version)
            if current.status in ("indexed", "production"):
                return current
            if current.status == "retired":
                raise ConflictError(
                    f"Model '{model}' version {version} is retired (its collection was deleted by gc); "
                    "register and index a new version instead."
                )
            if current.collection is None or not current.collection.verified:
                raise ConflictError(
                    f"Model '{model}' version {version} has no verified collection; run "
                    f"`towerctl embeddings write {model} --version {version}` and `towerctl embeddings verify`."
                )
            unit.set_status(version, "indexed")
            unit.audit(
                "index",
                version=version,
                actor=actor,
                reason=reason,
                from_status=current.status,
                to_status="indexed",
                details={"collection": current.collection.name},
            )
            return unit.version(version)

    # -- alignment reports --------------------------------------------------------------------------------------
    def record_alignment_report(self, report: AlignmentReport, *, actor: str) -> AlignmentReport:
        """Store a category-alignment report of ``report.model`` v``report.version`` as its next run, with an
        ``alignment`` audit event that counts its breaches; returns the stored report (run, id, created_at set)."""
        with self.locked_model(report.model) as unit:
            stored = unit.add_alignment_report(report, actor=actor)
            unit.audit(
                "alignment",
                version=report.version,
                actor=actor,
                details={
                    "run": stored.run,
                    "against_version": stored.against_version,
                    "breaches": len(stored.breaches),
                },
            )
        return stored

    def alignment_reports(self, model: str, *, version: int | None = None) -> list[AlignmentReport]:
        """The alignment reports of one version (or all versions) of ``model``, by version then run."""
        with self._model(model, write=False, lock=False) as unit:
            return unit.alignment_reports(version)

    def latest_alignment_report(self, model: str, version: int) -> AlignmentReport | None:
        reports = self.alignment_reports(model, version=version)
        return reports[-1] if reports else None


def plan_first_registration(model: str, *, version: int | None, **fields: Any) -> ModelVersion:
    """What :meth:`SqlRegistryStore.register_version` would record in a registry that holds nothing yet (the default
    SQLite file before its schema exists): version 1 unless the export names one."""
    checked = registration_fields(model, version=version, **fields)
    return planned_version(model, SqlRegistryStore._version_number(None, version, model=model), checked)


__all__ = ["DISTANCES", "SqlRegistryStore", "check_model_name"]
