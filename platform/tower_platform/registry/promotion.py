"""Promotion and rollback: a registry transaction paired with one Qdrant alias move.

Rules (the registry is the source of truth, the Qdrant alias ``<model>`` follows it):

- ``promote``: only an ``indexed`` version with a verified collection, whose artifacts still have their recorded
  sha256. Inside ONE registry transaction with the model row locked: the old production version goes back to
  ``indexed`` (it stays a rollback target), the new one becomes ``production``, the registry alias row moves and an
  audit event is written; then the Qdrant alias is swapped in one ``update_collection_aliases`` call. A failed swap
  rolls the transaction back; a failed commit after the swap swaps the alias back.
- ``rollback``: production returns to the previous production version, replayed from the audit log (see
  :func:`tower_platform.registry.production_history.production_stack`); the version rolled back from becomes ``rolled_back`` and is never a rollback target
  again (``towerctl embeddings verify`` can make it ``indexed`` once more).
- ``gc`` (:mod:`tower_platform.registry.retention`): retires versions beyond the newest ``keep``.

Re-running is safe: promoting the production version again changes nothing and writes no audit event, unless the
Qdrant alias drifted from the registry (a failed swap-back, a hand edit): then it moves the alias back to the
production collection and writes a ``realign`` event.

Gates: ``promote(..., gate=...)`` asks a :class:`PromotionGate` (e.g. ``tower_platform.monitor.AlignmentGate``) for
its verdict on the candidate, before anything changes. A verdict with breaches refuses the promotion with
:class:`MonitorBreachError` naming each segment and figure, unless ``force=True`` with a ``reason``: then the
promotion goes through and its audit event carries the breaches. Without a gate (the library default) nothing is
checked beyond servability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tower_platform.errors import (
    ConflictError,
    IntegrityError,
    MonitorBreachError,
    TowerError,
    UnavailableError,
    UsageError,
)
from tower_platform.naming import production_alias
from tower_platform.registry.artifact import verify_artifacts
from tower_platform.registry.entities import AuditEvent, ModelVersion
from tower_platform.registry.production_history import (
    production_stack,
    rollback_target,
    rollback_target_version,
)
from tower_platform.registry.store import SqlRegistryStore
from tower_platform.registry.unit_of_work import ModelUnitOfWork


class CollectionCount(Protocol):
    @property
    def point_count(self) -> int: ...


class VectorAliasStore(Protocol):
    """What promotion needs from the vector store (``tower_platform.vectors.store.QdrantVectorStore`` provides it)."""

    def alias_target(self, alias: str) -> str | None: ...

    def swap_alias(self, alias: str, collection: str, *, previous: str | None) -> None:
        """Point ``alias`` at ``collection`` in one call; ConflictError when the alias is not at ``previous``."""

    def delete_alias(self, alias: str) -> None: ...

    def collection_exists(self, name: str) -> bool: ...

    def collection_info(self, name: str) -> CollectionCount: ...

    def delete_collection(self, name: str) -> None: ...


@dataclass(frozen=True)
class GateVerdict:
    """What a gate found for one candidate: breaches as plain dicts, each with a one-line ``message``."""

    gate: str  # e.g. "alignment"
    breaches: tuple[dict[str, Any], ...] = ()
    details: dict[str, Any] | None = None  # recorded in the promote audit event (e.g. the report's run)
    summary: str | None = None  # for a refusal: what was breached, in one clause (default: every breach's message)
    listing: tuple[str, ...] = ()  # for a refusal: the few breaches worth a line each

    @property
    def passed(self) -> bool:
        return not self.breaches


class PromotionGate(Protocol):
    """Called with the candidate and the current production version (None: none yet) before a promotion."""

    def __call__(self, candidate: ModelVersion, production: ModelVersion | None) -> GateVerdict: ...


@dataclass(frozen=True)
class PromotionResult:
    model: str
    version: int  # production afterwards (or, with dry_run, what would be)
    previous_version: int | None
    collection: str
    alias: str
    changed: bool
    dry_run: bool = False
    event: AuditEvent | None = None
    verdict: GateVerdict | None = None
    forced: bool = False


# -- promotion ----------------------------------------------------------------------------------------------------
def promote(
    store: SqlRegistryStore,
    vectors: VectorAliasStore,
    model: str,
    version: int,
    *,
    actor: str,
    reason: str | None = None,
    check_artifacts: bool = True,
    dry_run: bool = False,
    gate: PromotionGate | None = None,
    force: bool = False,
) -> PromotionResult:
    """Make ``version`` the production version of ``model``: registry transaction + one alias swap.

    ``gate`` (optional) judges the candidate first; breaches refuse the promotion (MonitorBreachError) unless
    ``force`` is set, which needs a ``reason`` and records the breaches in the audit event.
    """
    if force and not (reason or "").strip():
        raise UsageError(
            f"Forcing the promotion of model '{model}' version {version} past its gates needs a reason; "
            "pass --reason TEXT (it is recorded in the audit log with the breaches)."
        )
    alias = production_alias(model)
    candidate = store.get_version(model, version)
    verdict = None
    if candidate.status != "production":
        _require_servable(candidate, vectors, check_artifacts=check_artifacts)
        if gate is not None:
            verdict = gate(candidate, store.production_version(model))
            _require_gate_passed(verdict, candidate, force=force)
    forced = bool(force and verdict is not None and not verdict.passed)
    if dry_run:
        current = store.production_version(model)
        return PromotionResult(
            model=model,
            version=candidate.version,
            previous_version=current.version if current else None,
            collection=_collection_of(candidate),
            alias=alias,
            changed=candidate.status != "production",
            dry_run=True,
            verdict=verdict,
            forced=forced,
        )
    with _AliasMove(vectors, alias=alias) as move, store.locked_model(model) as unit:
        current = unit.version(version)  # re-read under the lock: another promoter may have run meanwhile
        if current.status == "production":
            return _realign(unit, move, current, alias=alias, actor=actor, reason=reason)
        if candidate.status == "production":  # it was production when first read: not checked above
            _require_servable(current, vectors, check_artifacts=check_artifacts)
        _require_promotable(current)
        previous = unit.production()
        unit.set_production(version)  # the one record of production; both versions keep their stored ``indexed``
        alias_before = vectors.alias_target(alias)
        details = _swap_details(alias, alias_before, _collection_of(current), previous)
        if verdict is not None:
            details["gate"] = _gate_details(verdict, forced=forced)
        event = unit.audit(
            "promote",
            version=version,
            actor=actor,
            reason=reason,
            from_status=current.status,
            to_status="production",
            from_version=previous.version if previous else None,
            to_version=version,
            details=details,
        )
        move.swap(_collection_of(current), previous=alias_before)
    return PromotionResult(
        model=model,
        version=version,
        previous_version=previous.version if previous else None,
        collection=_collection_of(current),
        alias=alias,
        changed=True,
        event=event,
        verdict=verdict,
        forced=forced,
    )


def _require_gate_passed(verdict: GateVerdict, candidate: ModelVersion, *, force: bool) -> None:
    if verdict.passed or force:
        return
    if verdict.summary is not None:  # a summary and a short list, however many breaches there are
        raise MonitorBreachError(
            f"Model '{candidate.model}' version {candidate.version} fails its {verdict.gate} gate: "
            f"{verdict.summary}; promote anyway with --force --reason TEXT."
            + "".join(f"\n  - {line}" for line in verdict.listing)
            + (f"\n  ... and {len(verdict.breaches) - len(verdict.listing):,} more"
               if len(verdict.breaches) > len(verdict.listing) else "")
        )
    found = "; ".join(str(b.get("message")) for b in verdict.breaches)
    raise MonitorBreachError(
        f"Model '{candidate.model}' version {candidate.version} breaches {len(verdict.breaches)} {verdict.gate} "
        f"gate(s) ({found}); see `towerctl monitor alignment {candidate.model} --version {candidate.version}`, or "
        "promote anyway with --force --reason TEXT."
    )


def _gate_details(verdict: GateVerdict, *, forced: bool) -> dict[str, Any]:
    return {
        "gate": verdict.gate,
        "passed": verdict.passed,
        "forced": forced,
        "breaches": [dict(b) for b in verdict.breaches],
        **(verdict.details or {}),
    }


def rollback(
    store: SqlRegistryStore,
    vectors: VectorAliasStore,
    model: str,
    *,
    actor: str,
    reason: str | None = None,
    check_artifacts: bool = True,
    dry_run: bool = False,
) -> PromotionResult:
    """Return production to the previous production version; the current one becomes ``rolled_back``."""
    alias = production_alias(model)
    with _AliasMove(vectors, alias=alias) as move, store.locked_model(model) as unit:
        current = unit.production()
        target = rollback_target(unit, current)
        _require_servable(target, vectors, check_artifacts=check_artifacts)
        assert current is not None  # _rollback_target raised otherwise
        if dry_run:
            return PromotionResult(
                model, target.version, current.version, _collection_of(target), alias, changed=True, dry_run=True
            )
        unit.set_status(current.version, "rolled_back")
        unit.set_production(target.version)
        alias_before = vectors.alias_target(alias)
        event = unit.audit(
            "rollback",
            version=target.version,
            actor=actor,
            reason=reason,
            from_status=target.status,
            to_status="production",
            from_version=current.version,
            to_version=target.version,
            details={
                **_swap_details(alias, alias_before, _collection_of(target), current),
                "rolled_back_version": current.version,
            },
        )
        move.swap(_collection_of(target), previous=alias_before)
    return PromotionResult(
        model=model,
        version=target.version,
        previous_version=current.version,
        collection=_collection_of(target),
        alias=alias,
        changed=True,
        event=event,
    )


def _realign(
    unit: ModelUnitOfWork, move: _AliasMove, current: ModelVersion, *, alias: str, actor: str, reason: str | None
) -> PromotionResult:
    """Promoting the production version again: nothing to do, unless the Qdrant alias drifted (then move it back)."""
    collection = _collection_of(current)
    alias_before = move.target()
    if alias_before == collection:
        return PromotionResult(current.model, current.version, None, collection, alias, changed=False)
    event = unit.audit(
        "realign",
        version=current.version,
        actor=actor,
        reason=reason,
        details={"alias": alias, "alias_before": alias_before, "collection": collection, "alias_drift": True},
    )
    move.swap(collection, previous=alias_before)
    return PromotionResult(current.model, current.version, None, collection, alias, changed=True, event=event)


# -- checks ---------------------------------------------------------------------------------------------------------
def _collection_of(version: ModelVersion) -> str:
    assert version.collection is not None
    return version.collection.name


def _require_promotable(version: ModelVersion) -> None:
    if version.status == "retired":
        raise ConflictError(
            f"Model '{version.model}' version {version.version} is retired (gc deleted its collection); register and "
            "index a new version to promote it."
        )
    hint = f"run `towerctl embeddings write {version.model} --version {version.version}` and `towerctl embeddings verify`"
    if version.collection is None or not version.collection.verified:
        raise ConflictError(
            f"Model '{version.model}' version {version.version} has no verified collection; {hint} before promoting."
        )
    if version.status != "indexed":
        raise ConflictError(
            f"Model '{version.model}' version {version.version} is {version.status}, not indexed; {hint} before promoting."
        )


def _require_servable(version: ModelVersion, vectors: VectorAliasStore, *, check_artifacts: bool) -> None:
    """Promotable, its collection exists with the recorded point count, its artifacts are untouched."""
    _require_promotable(version)
    assert version.collection is not None
    name = version.collection.name
    if not vectors.collection_exists(name):
        raise ConflictError(
            f"Qdrant collection '{name}' of model '{version.model}' version {version.version} does not exist; "
            f"run `towerctl embeddings write {version.model} --version {version.version}` again."
        )
    count = int(vectors.collection_info(name).point_count)
    if count != version.collection.point_count:
        raise IntegrityError(
            f"Qdrant collection '{name}' holds {count} points, not the {version.collection.point_count} the registry "
            f"verified; run `towerctl embeddings verify {version.model} --version {version.version}`."
        )
    if check_artifacts:
        verify_artifacts(version.artifacts, model=version.model, version=version.version)


def _swap_details(
    alias: str, alias_before: str | None, collection: str, previous: ModelVersion | None
) -> dict[str, Any]:
    expected = previous.collection.name if previous is not None and previous.collection is not None else None
    return {"alias": alias, "alias_before": alias_before, "collection": collection, "alias_drift": alias_before != expected}


class _AliasMove:
    """Swaps the alias at most once; when the surrounding block fails after the swap, swaps it back.

    Entered before the registry transaction, exited after it: so a failed commit (raised when the transaction's
    ``with`` exits) is seen here, after the swap, and undone.
    """

    def __init__(self, vectors: VectorAliasStore, *, alias: str) -> None:
        self._vectors = vectors
        self._alias = alias
        self._swapped: tuple[str | None, str] | None = None  # (previous target, new target)

    def __enter__(self) -> _AliasMove:
        return self

    def target(self) -> str | None:
        return self._vectors.alias_target(self._alias)

    def swap(self, collection: str, *, previous: str | None) -> None:
        self._vectors.swap_alias(self._alias, collection, previous=previous)
        self._swapped = (previous, collection)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None or self._swapped is None:
            return
        previous, collection = self._swapped
        try:
            if previous is None:
                self._vectors.delete_alias(self._alias)
            else:
                self._vectors.swap_alias(self._alias, previous, previous=collection)
        except TowerError as restore_error:
            raise UnavailableError(
                f"The registry transaction failed after Qdrant alias '{self._alias}' moved to '{collection}', and "
                f"moving it back to {previous!r} failed too; run `towerctl models promote {self._alias} VERSION` "
                "with the production version shown by `towerctl models list` to realign them."
            ) from restore_error


from tower_platform.registry.retention import GcResult, RetiredVersion, gc  # noqa: E402  (re-exported)

__all__ = [
    "GateVerdict", "GcResult", "PromotionGate", "PromotionResult", "RetiredVersion", "VectorAliasStore", "gc",
    "production_stack", "promote", "rollback", "rollback_target_version",
]
