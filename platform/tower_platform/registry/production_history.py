"""The production history of a model, replayed from its audit log: which version a rollback returns to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tower_platform.errors import ConflictError
from tower_platform.registry.entities import AuditEvent, ModelVersion
from tower_platform.registry.unit_of_work import ModelUnitOfWork


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


def rollback_target_or_none(unit: ModelUnitOfWork, production: ModelVersion | None) -> ModelVersion | None:
    statuses = {v.version: v.status for v in unit.versions()}
    number = rollback_target_version(
        unit.audit_events(), statuses=statuses, production=production.version if production else None
    )
    return unit.version(number) if number is not None else None


def rollback_target(unit: ModelUnitOfWork, production: ModelVersion | None) -> ModelVersion:
    target = rollback_target_or_none(unit, production)
    if target is None:
        raise ConflictError(
            f"Model '{unit.model}' has no previous production version to roll back to; "
            f"promote a version with `towerctl models promote {unit.model} VERSION`."
        )
    return target
