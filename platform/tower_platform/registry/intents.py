"""Moving the production alias with an intent: record it, move the alias, record that it moved.

Every move of a model's vector-store alias (promotion, rollback, reconcile's realignment) runs these steps, with the
model's promotion lock held around all of them::

    begin(...)          transaction 1: the intent (model, from/to version and collection, actor, reason) is committed
    -- before_swap --
    alias swap          one atomic alias move in the vector store
    -- after_swap --
    complete(...)       transaction 2: production alias row (+ the rolled-back status), intent completed, audit event
    -- after_commit --

A process killed at a step marker leaves a state every command detects (:mod:`tower_platform.registry.serving_state`)
and ``towerctl models reconcile`` repairs (:mod:`tower_platform.registry.reconcile`): before the swap, a pending intent
with the alias where it was; after the swap, a pending intent with the alias moved and the registry not; after the
commit, nothing to repair. A swap that fails aborts the intent; a commit that fails moves the alias back and aborts
it (whatever fails there too leaves the intent pending, for reconcile). ``on_step`` is called with each marker's name
(tests kill the process there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from tower_platform.errors import TowerError, UnavailableError
from tower_platform.naming import production_alias
from tower_platform.registry.entities import AuditEvent, PromotionIntent
from tower_platform.registry.unit_of_work import ModelUnitOfWork

StepHook = Callable[[str], None]
STEPS: tuple[str, ...] = ("before_swap", "after_swap", "after_commit")


def no_step(_name: str) -> None:
    return None


class AliasMover(Protocol):
    def swap_alias(self, alias: str, collection: str, *, previous: str | None) -> None: ...

    def delete_alias(self, alias: str) -> None: ...


def begin(
    store: Any,
    model: str,
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
    """Commit a pending intent (ConflictError when the model already has one)."""
    with store.locked_model(model) as unit:
        return unit.begin_intent(
            action, from_version=from_version, to_version=to_version, from_collection=from_collection,
            to_collection=to_collection, actor=actor, reason=reason, details=details,
        )


def apply(unit: ModelUnitOfWork, intent: PromotionIntent, *, extra: dict[str, Any] | None = None) -> AuditEvent:
    """The registry side of an intent, inside the caller's transaction: production alias row, statuses, audit event.

    promote: production becomes ``to_version``; rollback: likewise, and ``from_version`` becomes ``rolled_back``;
    realign: production is unchanged (the alias moved back to it), the event is a ``reconcile``.
    """
    details = {**intent.details, "intent": intent.id, **(extra or {})}
    if intent.action == "realign":
        return unit.audit("reconcile", version=intent.to_version, actor=intent.actor, reason=intent.reason,
                          details=details)
    assert intent.to_version is not None
    target = unit.version(intent.to_version)
    if intent.action == "rollback" and intent.from_version is not None:
        unit.set_status(intent.from_version, "rolled_back")
    unit.set_production(intent.to_version)
    stored_status = "indexed" if target.status == "production" else target.status
    return unit.audit(
        intent.action,
        version=intent.to_version,
        actor=intent.actor,
        reason=intent.reason,
        from_status=stored_status,
        to_status="production",
        from_version=intent.from_version,
        to_version=intent.to_version,
        details=details,
    )


def complete(store: Any, intent: PromotionIntent, *, resolution: str = "alias moved and registry committed") -> AuditEvent:
    """Transaction 2: apply the intent and mark it completed, linked to the audit event it wrote."""
    with store.locked_model(intent.model) as unit:
        event = apply(unit, intent)
        unit.resolve_intent(intent.id, state="completed", resolution=resolution, resolved_by=intent.actor,
                            audit_event_id=event.id)
    return event


def abort(store: Any, intent: PromotionIntent, *, resolution: str, actor: str) -> bool:
    """Mark the intent aborted (the alias is where it started); False when that fails too (it stays pending)."""
    try:
        with store.locked_model(intent.model) as unit:
            unit.resolve_intent(intent.id, state="aborted", resolution=resolution, resolved_by=actor)
    except TowerError:
        return False
    return True


def move_alias(vectors: AliasMover, alias: str, *, to: str | None, previous: str | None) -> None:
    if to is None:
        vectors.delete_alias(alias)
    else:
        vectors.swap_alias(alias, to, previous=previous)


def carry_out(store: Any, vectors: AliasMover, intent: PromotionIntent, *, on_step: StepHook = no_step) -> AuditEvent:
    """Move the alias as ``intent`` says, then complete it (see the module docstring for the failure paths)."""
    alias = production_alias(intent.model)
    on_step("before_swap")
    try:
        move_alias(vectors, alias, to=intent.to_collection, previous=intent.from_collection)
    except TowerError:
        abort(store, intent, resolution="the alias swap failed; the alias did not move", actor=intent.actor)
        raise
    on_step("after_swap")
    try:
        event = complete(store, intent)
    except TowerError as commit_error:
        _undo_after_failed_commit(store, vectors, intent, alias=alias, error=commit_error)
        raise
    on_step("after_commit")
    return event


def _undo_after_failed_commit(
    store: Any, vectors: AliasMover, intent: PromotionIntent, *, alias: str, error: TowerError
) -> None:
    """The registry refused transaction 2: move the alias back and abort the intent, or say how to repair."""
    try:
        if intent.from_collection is None:
            vectors.delete_alias(alias)
        else:
            vectors.swap_alias(alias, intent.from_collection, previous=intent.to_collection)
    except TowerError as restore_error:
        raise UnavailableError(
            f"The registry refused to record {intent.describe()} ({error.message}) and moving alias '{alias}' back "
            f"to {intent.from_collection!r} failed too ({restore_error.message}); run "
            f"`towerctl models reconcile {intent.model}` once both are reachable."
        ) from error
    abort(store, intent, resolution=f"the registry commit failed ({error.message}); the alias was moved back",
          actor=intent.actor)
