"""Promotion and rollback: the registry's production alias row and the vector store's alias ``<model>``, moved
together through an intent that survives a crash.

Rules (the registry records what is production; the vector store's alias serves it):

- ``promote``: only an ``indexed`` version with a verified collection, whose artifacts still have their recorded
  sha256, past its gates. The version becomes ``production`` (shown for the version the registry's alias row names;
  the previous one shows ``indexed`` again and stays a rollback target).
- ``rollback``: production returns to the previous production version, replayed from the audit log (see
  :func:`tower_platform.registry.production_history.production_stack`); the version rolled back from becomes
  ``rolled_back`` and is never a rollback target again (``towerctl embeddings verify`` can make it ``indexed`` once more).
- ``gc`` (:mod:`tower_platform.registry.retention`): retires versions beyond the newest ``keep``.

Both hold the model's promotion lock (:mod:`tower_platform.registry.promotion_lock`) from the first check to the last
write, and move the alias through an intent (:mod:`tower_platform.registry.intents`): intent committed, alias swapped,
production row + intent completed + audit event committed in one transaction. Each refuses (ConflictError, exit 4,
naming ``towerctl models reconcile MODEL``) while the registry and the vector store disagree or an intent is pending
(:func:`tower_platform.registry.serving_state.require_consistent`): a killed run is repaired, never built upon. One
disagreement is let through: a production collection that is gone with nothing served (the alias missing or
dangling), which promoting or rolling back to a version whose collection exists repairs.

Re-running is safe: promoting the production version again changes nothing and writes no audit event.

Gates: ``promote(..., gate=...)`` asks a :class:`PromotionGate` (e.g. ``tower_platform.monitor.AlignmentGate``) for
its verdict on the candidate, before anything changes. A verdict with breaches refuses the promotion with
:class:`MonitorBreachError` naming each segment and figure, unless ``force=True`` with a ``reason``: then the
promotion goes through and its audit event carries the breaches. Without a gate (the library default) nothing is
checked beyond servability.

Dry runs (``dry_run=True``) make the same checks and ask the same gate, under no lock and writing nothing (the caller
hands a gate that does not store its report), and return what the real run would do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tower_platform.errors import ConflictError, IntegrityError, MonitorBreachError, UsageError
from tower_platform.registry import intents
from tower_platform.registry.artifact import verify_artifacts
from tower_platform.registry.entities import AuditEvent, ModelVersion
from tower_platform.registry.intents import STEPS, StepHook, no_step
from tower_platform.registry.production_history import (
    production_stack,
    rollback_target,
    rollback_target_version,
)
from tower_platform.registry.serving_state import ServingState, read_serving_state, require_consistent
from tower_platform.registry.store import SqlRegistryStore


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
    on_step: StepHook = no_step,
) -> PromotionResult:
    """Make ``version`` the production version of ``model``: intent, one alias swap, one registry transaction.

    ``gate`` (optional) judges the candidate first; breaches refuse the promotion (MonitorBreachError) unless
    ``force`` is set, which needs a ``reason`` and records the breaches in the audit event. ``on_step`` is called at
    each of :data:`STEPS` (see :mod:`tower_platform.registry.intents`).
    """
    if force and not (reason or "").strip():
        raise UsageError(
            f"Forcing the promotion of model '{model}' version {version} past its gates needs a reason; "
            "pass --reason TEXT (it is recorded in the audit log with the breaches)."
        )
    if dry_run:
        return _plan_promotion(store, vectors, model, version, check_artifacts=check_artifacts, gate=gate,
                               force=force).result(dry_run=True)
    with store.promotion_lock(model):
        plan = _plan_promotion(store, vectors, model, version, check_artifacts=check_artifacts, gate=gate, force=force)
        if not plan.changed:
            return plan.result()
        intent = intents.begin(
            store, model, "promote",
            from_version=plan.previous_version, to_version=version,
            from_collection=plan.state.alias_target, to_collection=plan.collection,
            actor=actor, reason=reason, details=plan.details,
        )
        event = intents.carry_out(store, vectors, intent, on_step=on_step)
    return plan.result(event=event)


def rollback(
    store: SqlRegistryStore,
    vectors: VectorAliasStore,
    model: str,
    *,
    actor: str,
    reason: str | None = None,
    check_artifacts: bool = True,
    dry_run: bool = False,
    on_step: StepHook = no_step,
) -> PromotionResult:
    """Return production to the previous production version; the current one becomes ``rolled_back``."""
    if dry_run:
        return _plan_rollback(store, vectors, model, check_artifacts=check_artifacts).result(dry_run=True)
    with store.promotion_lock(model):
        plan = _plan_rollback(store, vectors, model, check_artifacts=check_artifacts)
        intent = intents.begin(
            store, model, "rollback",
            from_version=plan.previous_version, to_version=plan.version,
            from_collection=plan.state.alias_target, to_collection=plan.collection,
            actor=actor, reason=reason, details=plan.details,
        )
        event = intents.carry_out(store, vectors, intent, on_step=on_step)
    return plan.result(event=event)


@dataclass(frozen=True)
class _Plan:
    """What a promotion or rollback will do, from checks that all passed."""

    model: str
    version: int
    previous_version: int | None
    collection: str
    state: ServingState
    details: dict[str, Any]  # the audit event's
    changed: bool = True
    verdict: GateVerdict | None = None
    forced: bool = False

    def result(self, *, dry_run: bool = False, event: AuditEvent | None = None) -> PromotionResult:
        return PromotionResult(
            model=self.model, version=self.version, previous_version=self.previous_version,
            collection=self.collection, alias=self.state.alias, changed=self.changed, dry_run=dry_run, event=event,
            verdict=self.verdict, forced=self.forced,
        )


def _plan_promotion(
    store: SqlRegistryStore, vectors: VectorAliasStore, model: str, version: int, *, check_artifacts: bool,
    gate: PromotionGate | None, force: bool,
) -> _Plan:
    state = read_serving_state(store, vectors, model)
    require_consistent(state, replacing_production=True)
    candidate = state.version(version)
    collection = _collection_of(candidate) if candidate.collection is not None else ""
    if candidate.status == "production":
        if state.ok:  # the alias already serves it
            return _Plan(model, version, None, collection, state, {}, changed=False)
        raise ConflictError(  # let through by require_consistent: production is lost, so its collection is gone
            f"Model '{model}' version {version} is production but its collection '{collection}' does not exist in the "
            f"vector store; write it again with `towerctl embeddings write {model} --version {version}` and run "
            f"`towerctl models reconcile {model}`, or promote a version whose collection exists."
        )
    _require_servable(candidate, vectors, check_artifacts=check_artifacts)
    previous = state.version(state.production_version) if state.production_version is not None else None
    verdict = gate(candidate, previous) if gate is not None else None
    if verdict is not None:
        _require_gate_passed(verdict, candidate, force=force)
    forced = bool(force and verdict is not None and not verdict.passed)
    details = _swap_details(state, _collection_of(candidate))
    if verdict is not None:
        details["gate"] = _gate_details(verdict, forced=forced)
    return _Plan(model, version, previous.version if previous else None, _collection_of(candidate), state, details,
                 verdict=verdict, forced=forced)


def _plan_rollback(store: SqlRegistryStore, vectors: VectorAliasStore, model: str, *, check_artifacts: bool) -> _Plan:
    state = read_serving_state(store, vectors, model)
    require_consistent(state, replacing_production=True)
    with store.reading(model) as unit:
        current = unit.production()
        target = rollback_target(unit, current)
    _require_servable(target, vectors, check_artifacts=check_artifacts)
    assert current is not None  # rollback_target raised otherwise
    details = {**_swap_details(state, _collection_of(target)), "rolled_back_version": current.version}
    return _Plan(model, target.version, current.version, _collection_of(target), state, details)


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


def _swap_details(state: ServingState, collection: str) -> dict[str, Any]:
    """The alias facts of a promotion or rollback's audit event (``alias_drift`` is False: drift is refused)."""
    return {"alias": state.alias, "alias_before": state.alias_target, "collection": collection,
            "alias_drift": state.alias_target != state.production_collection}


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


from tower_platform.registry.retention import GcResult, RetiredVersion, gc  # noqa: E402  (re-exported)

__all__ = [
    "STEPS", "GateVerdict", "GcResult", "PromotionGate", "PromotionResult", "RetiredVersion", "StepHook",
    "VectorAliasStore", "gc", "production_stack", "promote", "rollback", "rollback_target_version",
]
