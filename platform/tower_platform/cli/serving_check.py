"""The serving check of the commands that open a model: does the vector store serve what the registry says?

Read commands (``models list``, ``models show``, ``embeddings status``, ``recommend``) call :func:`check` and print
each problem as a ``warning:`` line on stderr (:func:`warn`), and flag it in their table and ``--json``; promote,
rollback and gc refuse inside the registry (:func:`tower_platform.registry.serving_state.require_consistent`). A vector
store that cannot be opened leaves the state unknown (None) with a warning, so a read command still answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tower_platform.cli.context import open_vectors
from tower_platform.cli.output import err_console

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.serving_state import ServingProblem, ServingState
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.settings import Settings

_SHORT = {"pending_intent": "intent pending", "alias_drift": "alias drift", "missing_collection": "collection missing"}


def check(registry: SqlRegistryStore, vectors: Any, model: str) -> ServingState:
    from tower_platform.registry.serving_state import read_serving_state

    return read_serving_state(registry, vectors, model)


def check_models(
    registry: SqlRegistryStore, settings: Settings, models: Iterable[str]
) -> dict[str, ServingState | None]:
    """Open the vector store and check each model (warning on stderr for each problem); None when it cannot open."""
    from tower_platform.errors import UnavailableError

    names = list(models)
    if not names:
        return {}
    try:
        with open_vectors(settings) as vectors:
            states: dict[str, ServingState | None] = {name: check(registry, vectors, name) for name in names}
    except UnavailableError as exc:
        err_console.print(f"warning: the vector store was not checked ({exc.message})", markup=False, highlight=False)
        return {name: None for name in names}
    for state in states.values():
        warn(state)
    return states


def warn(state: ServingState | None) -> None:
    for problem in state.problems if state is not None else ():
        err_console.print(f"warning: {problem.message}", markup=False, highlight=False)


def short(problems: Iterable[ServingProblem]) -> str:
    """e.g. ``intent pending, alias drift`` (empty for none)."""
    return ", ".join(dict.fromkeys(_SHORT.get(p.kind, p.kind) for p in problems))


def summary(state: ServingState | None) -> str:
    if state is None:
        return "unchecked"
    return "ok" if state.ok else f"{short(state.problems)}: towerctl models reconcile {state.model}"


def as_json(state: ServingState | None) -> dict[str, Any] | None:
    return None if state is None else state.to_dict()


def collection_cells(state: ServingState | None, name: str | None, *, verified: bool) -> tuple[str, str]:
    """(verified, alias) cells of a version whose collection is ``name``: ``missing`` when the vector store lacks it."""
    if name is None:
        return "no", ""
    if state is not None and not state.collections_present.get(name, True):
        return "missing", ""
    alias = "<-" if state is not None and state.alias_target == name else ""
    return ("yes" if verified else "no"), alias


def version_json(state: ServingState | None, version: int, name: str | None) -> dict[str, Any]:
    """The serving fields a version's ``--json`` gains: in the vector store, served by the alias, its problems."""
    if state is None:
        return {"in_vector_store": None, "alias": None, "problems": []}
    return {
        "in_vector_store": state.collections_present.get(name) if name is not None else None,
        "alias": name is not None and state.alias_target == name,
        "problems": [p.message for p in state.problems_of(version)],
    }
