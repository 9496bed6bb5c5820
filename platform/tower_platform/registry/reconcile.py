"""``towerctl models reconcile MODEL``: repair what a killed promotion or rollback, or a hand edit, left behind.

The vector store's alias is the truth of what serves; the registry's production row is the truth of what was decided,
and a pending intent says a decision was being carried out. Reconcile holds the model's promotion lock and:

1. resolves a pending intent by where the alias points now:

   - at the intent's target collection: the swap happened and only the registry commit is missing, so the intent is
     **completed** as the killed run would have done it (production row, rolled-back status, the intent's own
     ``promote`` / ``rollback`` audit event with ``completed_by: reconcile``);
   - where the intent started (its source collection, or no alias when it started with none): the swap never
     happened, so the intent is **aborted** and production stays where the registry has it;
   - anywhere else (someone moved or deleted it): the intent is **aborted** and step 2 realigns the alias;

   in one transaction with a ``reconcile`` audit event describing the decision;
2. then, with no intent pending, moves an alias that disagrees with the registry's production version to that
   version's collection when the collection exists, or removes the alias when the registry has no production version
   — itself through an intent (action ``realign``), so that a crash here is repaired the same way. A production
   collection that no longer exists cannot be repaired here: the result says so and names
   ``towerctl embeddings write MODEL --version N`` (then reconcile again).

Nothing to repair writes nothing. ``dry_run`` reports the same decisions and writes nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from tower_platform.registry import intents
from tower_platform.registry.entities import AuditEvent, PromotionIntent
from tower_platform.registry.intents import StepHook, no_step
from tower_platform.registry.serving_state import ServingProblem, ServingState, read_serving_state

COMPLETE = "complete"
ABORT = "abort"


@dataclass(frozen=True)
class ReconcileStep:
    action: str  # complete_intent | abort_intent | realign_alias | remove_alias
    description: str
    event: AuditEvent | None = None  # the reconcile audit event (None in a dry run)


@dataclass(frozen=True)
class ReconcileResult:
    model: str
    dry_run: bool
    before: ServingState
    steps: tuple[ReconcileStep, ...]
    remaining: tuple[ServingProblem, ...]  # what is still wrong afterwards (dry run: what would be)

    @property
    def changed(self) -> bool:
        return bool(self.steps) and not self.dry_run

    @property
    def repaired(self) -> bool:
        return not self.remaining


def reconcile(
    store: Any,
    vectors: Any,
    model: str,
    *,
    actor: str,
    reason: str | None = None,
    dry_run: bool = False,
    on_step: StepHook = no_step,
) -> ReconcileResult:
    """Resolve a pending intent and realign the alias (see the module docstring); ``store``: a SqlRegistryStore."""
    with contextlib.nullcontext() if dry_run else store.promotion_lock(model):
        before = read_serving_state(store, vectors, model)
        steps: list[ReconcileStep] = []
        production, expected = before.production_version, before.production_collection
        if before.pending_intent is not None:
            intent = before.pending_intent
            decision, description = _decide(intent, before.alias_target, vectors)
            if decision == COMPLETE:
                production, expected = intent.to_version, intent.to_collection
            event = None if dry_run else _resolve(store, intent, decision, description, before.alias_target,
                                                  actor=actor, reason=reason)
            steps.append(ReconcileStep(f"{decision}_intent", description, event))
        realign = _realignment(before, production=production, expected=expected, vectors=vectors)
        if realign is not None:
            action, description, from_version = realign
            event = None
            if not dry_run:
                intent = intents.begin(
                    store, model, "realign", from_version=from_version, to_version=production,
                    from_collection=before.alias_target, to_collection=expected, actor=actor, reason=reason,
                    details={"decision": action, "description": description, "alias": before.alias,
                             "alias_before": before.alias_target, "collection": expected},
                )
                event = intents.carry_out(store, vectors, intent, on_step=on_step)
            steps.append(ReconcileStep(action, description, event))
        if dry_run:
            remaining = _unrepairable(before, production=production, expected=expected, vectors=vectors)
        else:
            remaining = read_serving_state(store, vectors, model).problems
    return ReconcileResult(model=model, dry_run=dry_run, before=before, steps=tuple(steps), remaining=remaining)


def _decide(intent: PromotionIntent, alias_target: str | None, vectors: Any) -> tuple[str, str]:
    where = f"'{alias_target}'" if alias_target is not None else "nowhere (no alias)"
    if (
        intent.to_collection is not None
        and alias_target == intent.to_collection
        and vectors.collection_exists(intent.to_collection)
    ):
        return COMPLETE, (
            f"completed {intent.describe()}: the alias had moved to {where}, only the registry commit was missing"
        )
    if alias_target == intent.from_collection:
        return ABORT, f"aborted {intent.describe()}: the alias never moved (it points {_at(where)})"
    return ABORT, (
        f"aborted {intent.describe()}: the alias points {_at(where)}, neither where it started nor where it was going"
    )


def _at(where: str) -> str:
    return where if where.startswith("nowhere") else f"to {where}"


def _resolve(
    store: Any, intent: PromotionIntent, decision: str, description: str, alias_target: str | None, *, actor: str,
    reason: str | None,
) -> AuditEvent:
    """One transaction: the intent resolved (and, when completed, applied) and a ``reconcile`` audit event."""
    with store.locked_model(intent.model) as unit:
        change = None
        if decision == COMPLETE:
            change = intents.apply(unit, intent, extra={"completed_by": "reconcile", "reconciled_by": actor})
        event = unit.audit(
            "reconcile",
            version=intent.to_version if decision == COMPLETE else intent.from_version,
            actor=actor,
            reason=reason,
            from_version=intent.from_version,
            to_version=intent.to_version,
            details={"intent": intent.id, "intent_action": intent.action, "decision": f"{decision}_intent",
                     "description": description, "alias_target": alias_target,
                     "completed_event": change.id if change is not None else None},
        )
        unit.resolve_intent(
            intent.id, state="completed" if decision == COMPLETE else "aborted",
            resolution=f"reconcile: {description}", resolved_by=actor,
            audit_event_id=change.id if change is not None else event.id,
        )
    return event


def _realignment(
    state: ServingState, *, production: int | None, expected: str | None, vectors: Any
) -> tuple[str, str, int | None] | None:
    """(action, description, version the alias serves now) of moving the alias to ``expected``; None: nothing to do
    or nothing that can be done."""
    target = state.alias_target
    if target == expected:
        return None
    served = state.collection_versions.get(target) if target is not None else None
    if expected is None:
        return "remove_alias", f"removed alias '{state.alias}' (it pointed to '{target}'; no version is production)", served
    if not vectors.collection_exists(expected):
        return None
    before = f"'{target}'" if target is not None else "nothing"
    return (
        "realign_alias",
        f"moved alias '{state.alias}' from {before} to '{expected}', the collection of production version {production}",
        served,
    )


def _unrepairable(
    state: ServingState, *, production: int | None, expected: str | None, vectors: Any
) -> tuple[ServingProblem, ...]:
    if production is None or expected is None or vectors.collection_exists(expected):
        return ()
    return tuple(p for p in state.problems if p.kind == "missing_collection" and production in p.versions) or (
        ServingProblem(
            "missing_collection",
            f"the collection '{expected}' of production version {production} of model '{state.model}' does not exist "
            "in the vector store",
            f"write it again with `towerctl embeddings write {state.model} --version {production}` and run "
            f"`towerctl models reconcile {state.model}`, or promote (or roll back to) a version whose collection exists",
            (production,),
        ),
    )
