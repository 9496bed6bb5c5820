"""Promotion, rollback and garbage collection: a registry transaction paired with one Qdrant alias move.

Rules (the registry is the source of truth, the Qdrant alias ``<model>`` follows it):

- ``promote``: only an ``indexed`` version with a verified collection, whose artifacts still have their recorded
  sha256. Inside ONE registry transaction with the model row locked: the old production version goes back to
  ``indexed`` (it stays a rollback target), the new one becomes ``production``, the registry alias row moves and an
  audit event is written; then the Qdrant alias is swapped in one ``update_collection_aliases`` call. A failed swap
  rolls the transaction back; a failed commit after the swap swaps the alias back.
- ``rollback``: production returns to the previous production version, replayed from the audit log (see
  :func:`production_stack`); the version rolled back from becomes ``rolled_back`` and is never a rollback target
  again (``towerctl embeddings verify`` can make it ``indexed`` once more).
- ``gc``: retires versions beyond the newest ``keep``: their collections and artifact folders are deleted; the
  production version and the rollback target are never touched.

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

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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


@dataclass(frozen=True)
class RetiredVersion:
    version: int
    status: str  # before gc
    collection: str | None  # deleted (or, with dry_run, to delete); None when there was none left
    artifact_dir: str | None  # deleted folder (None: outside the artifacts root or already gone)


@dataclass(frozen=True)
class GcResult:
    model: str
    dry_run: bool
    kept: tuple[int, ...]
    retired: tuple[RetiredVersion, ...]


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
        if previous is not None:
            unit.set_status(previous.version, "indexed")
        unit.set_status(version, "production")
        unit.set_production(version)
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
        target = _rollback_target(unit, current)
        _require_servable(target, vectors, check_artifacts=check_artifacts)
        assert current is not None  # _rollback_target raised otherwise
        if dry_run:
            return PromotionResult(
                model, target.version, current.version, _collection_of(target), alias, changed=True, dry_run=True
            )
        unit.set_status(current.version, "rolled_back")
        unit.set_status(target.version, "production")
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


def production_stack(events: Sequence[AuditEvent]) -> list[int]:
    """The versions that were production, oldest first, as promote and rollback events leave them.

    A promote pushes its version; a rollback removes the version rolled back from (everywhere: a rolled-back
    version is never a rollback target again) and unwinds the stack down to the version it returned to.

    Worked example: promote 1, promote 2, promote 3 -> [1, 2, 3]; rollback 3->2 -> [1, 2]; promote 4 -> [1, 2, 4].
    """
    stack: list[int] = []
    for event in events:
        if event.action == "promote" and event.to_version is not None:
            stack.append(event.to_version)
        elif event.action == "rollback" and event.to_version is not None:
            stack = [v for v in stack if v != event.from_version]
            while stack and stack[-1] != event.to_version:
                stack.pop()
            if not stack:
                stack.append(event.to_version)
    return stack


def rollback_target_version(
    events: Sequence[AuditEvent], *, statuses: Mapping[int, str], production: int | None
) -> int | None:
    """The nearest earlier production version that is still ``indexed`` (None: nothing to roll back to)."""
    if production is None:
        return None
    for version in reversed(production_stack(events)):
        if version != production and statuses.get(version) == "indexed":
            return version
    return None


# -- garbage collection ---------------------------------------------------------------------------------------------
def gc(
    store: SqlRegistryStore,
    vectors: VectorAliasStore,
    model: str,
    *,
    keep: int,
    artifacts_root: str | Path,
    dry_run: bool,
    actor: str = "system",
    reason: str | None = None,
) -> GcResult:
    """Retire every version but the newest ``keep``, production and the rollback target.

    Retiring deletes the version's Qdrant collection and its artifact folder (only a folder inside
    ``artifacts_root``, and only one that no kept version uses). Re-running finishes a gc that failed half-way.
    """
    if keep < 0:
        raise UsageError(f"--keep {keep} for model '{model}' is negative; pass 0 or more versions to keep.")
    root = Path(artifacts_root).expanduser().resolve()
    alias = production_alias(model)
    with store.locked_model(model) as unit:
        versions = unit.versions()
        production = unit.production()
        target = _rollback_target_or_none(unit, production)
        newest = {v.version for v in sorted(versions, key=lambda v: v.version, reverse=True)[:keep]}
        kept = newest | {v.version for v in (production, target) if v is not None}
        live_dirs = {_artifact_dir(v, root) for v in versions if v.version in kept} - {None}
        alias_target = vectors.alias_target(alias)
        retired: list[RetiredVersion] = []
        for version in versions:
            if version.version in kept:
                continue
            collection = _deletable_collection(version, vectors)
            if collection is not None and collection == alias_target:
                raise ConflictError(
                    f"Qdrant alias '{alias}' points to '{collection}' of version {version.version}, not to the "
                    f"registry's production version; promote the production version again before `towerctl models gc`."
                )
            folder = _artifact_dir(version, root)
            folder = folder if folder is not None and folder not in live_dirs and folder.exists() else None
            if version.status == "retired" and collection is None and folder is None:
                continue  # nothing left to do
            retired.append(RetiredVersion(version.version, version.status, collection, str(folder) if folder else None))
            if dry_run:
                continue
            if version.status != "retired":
                unit.set_status(version.version, "retired")
            unit.mark_collection_deleted(version.version)
            unit.audit(
                "retire",
                version=version.version,
                actor=actor,
                reason=reason,
                from_status=version.status,
                to_status="retired",
                details={"collection": collection, "artifact_dir": str(folder) if folder else None, "keep": keep},
            )
        if not dry_run:  # external deletions last: a failure here rolls the registry changes back
            for item in retired:
                if item.collection is not None:
                    vectors.delete_collection(item.collection)
                if item.artifact_dir is not None:
                    _remove_folder(Path(item.artifact_dir))
    return GcResult(model=model, dry_run=dry_run, kept=tuple(sorted(kept)), retired=tuple(retired))


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


def _rollback_target_or_none(unit: ModelUnitOfWork, production: ModelVersion | None) -> ModelVersion | None:
    statuses = {v.version: v.status for v in unit.versions()}
    number = rollback_target_version(
        unit.audit_events(), statuses=statuses, production=production.version if production else None
    )
    return unit.version(number) if number is not None else None


def _rollback_target(unit: ModelUnitOfWork, production: ModelVersion | None) -> ModelVersion:
    target = _rollback_target_or_none(unit, production)
    if target is None:
        raise ConflictError(
            f"Model '{unit.model}' has no previous production version to roll back to; "
            f"promote a version with `towerctl models promote {unit.model} VERSION`."
        )
    return target


def _swap_details(
    alias: str, alias_before: str | None, collection: str, previous: ModelVersion | None
) -> dict[str, Any]:
    expected = previous.collection.name if previous is not None and previous.collection is not None else None
    return {"alias": alias, "alias_before": alias_before, "collection": collection, "alias_drift": alias_before != expected}


def _deletable_collection(version: ModelVersion, vectors: VectorAliasStore) -> str | None:
    if version.collection is None:
        return None
    name = version.collection.name
    return name if vectors.collection_exists(name) else None


def _artifact_dir(version: ModelVersion, root: Path) -> Path | None:
    """The one folder holding all of a version's artifacts, when it lies strictly inside ``root``."""
    parents = {Path(a.path).parent for a in version.artifacts}
    if len(parents) != 1:
        return None
    folder = parents.pop().resolve()
    return folder if folder != root and folder.is_relative_to(root) else None


def _remove_folder(folder: Path) -> None:
    """Rename first (one atomic step: the folder is gone for every reader), then delete the renamed copy."""
    doomed = folder.with_name(f".{folder.name}.deleting")
    if doomed.exists():
        shutil.rmtree(doomed)
    if folder.exists():
        os.replace(folder, doomed)
        shutil.rmtree(doomed)


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
