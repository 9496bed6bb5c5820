"""Does the vector store serve what the registry says? The check every command runs when it opens a model.

Three facts are compared: the registry's production version (its alias row) and that version's collection, the
model's pending promotion intent (a promotion, rollback or realignment whose process stopped half-way, or that is
still running), and the vector store's alias ``<model>`` with the collection behind it. Problems:

- ``pending_intent``: an intent is pending;
- ``alias_drift``: the alias points elsewhere than the production collection, or is missing, or exists while the
  registry has no production version;
- ``missing_collection``: the production version's collection, or the collection the alias points to, does not
  exist in the vector store.

Each problem names the versions it concerns and ends with the repair, ``towerctl models reconcile MODEL`` (or, when
the collection itself is gone, rewriting it first). Read commands show them; promote, rollback and gc refuse while
there are any (:func:`require_consistent`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from tower_platform.errors import ConflictError, NotFoundError
from tower_platform.naming import production_alias
from tower_platform.registry.entities import ModelVersion, PromotionIntent

PROBLEM_KINDS: tuple[str, ...] = ("pending_intent", "alias_drift", "missing_collection")


class AliasReader(Protocol):
    """What the check reads from a vector store (both ``QdrantVectorStore`` and ``EdgeVectorStore`` provide it)."""

    def alias_target(self, alias: str) -> str | None: ...

    def collection_exists(self, name: str) -> bool: ...


@dataclass(frozen=True)
class ServingProblem:
    kind: str  # one of PROBLEM_KINDS
    fact: str  # what disagrees, e.g. "alias 'movies' of model 'movies' is missing, but ..."
    repair: str  # the command(s) that fix it
    versions: tuple[int, ...] = ()  # the versions it concerns

    @property
    def message(self) -> str:
        return f"{self.fact}; {self.repair}."

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "versions": list(self.versions)}


@dataclass(frozen=True)
class ServingState:
    model: str
    alias: str
    alias_target: str | None  # the collection the vector store's alias points to (None: no alias)
    production_version: int | None  # the registry's
    production_collection: str | None
    pending_intent: PromotionIntent | None
    collections_present: dict[str, bool] = field(default_factory=dict)  # each version's collection -> exists
    collection_versions: dict[str, int] = field(default_factory=dict)  # collection name -> its version
    problems: tuple[ServingProblem, ...] = ()
    alias_serves: bool = False  # the alias points to a collection that exists
    versions: tuple[ModelVersion, ...] = ()  # the registry's versions the state was read from

    def version(self, number: int) -> ModelVersion:
        """A version of this snapshot; NotFoundError (as the registry's) when the model has no such version."""
        for found in self.versions:
            if found.version == int(number):
                return found
        raise NotFoundError(f"Model '{self.model}' has no version {number}; see `towerctl models list {self.model}`.")

    @property
    def production_lost(self) -> bool:
        """Nothing is served and nothing is half-done: the production collection is gone, the alias serves nothing and
        no intent is pending. Promoting or rolling back to a version whose collection exists repairs that."""
        kinds = {p.kind for p in self.problems}
        return (
            self.pending_intent is None
            and not self.alias_serves
            and self.production_version is not None
            and not self.collections_present.get(self.production_collection or "", False)
            and kinds <= {"missing_collection", "alias_drift"}
        )

    @property
    def ok(self) -> bool:
        return not self.problems

    def problems_of(self, version: int) -> list[ServingProblem]:
        return [p for p in self.problems if version in p.versions]

    def summary(self) -> str:
        """``ok``, or the problem kinds, e.g. ``pending intent, alias drift``."""
        return "ok" if self.ok else ", ".join(dict.fromkeys(p.kind.replace("_", " ") for p in self.problems))

    def to_dict(self) -> dict[str, Any]:
        intent = self.pending_intent
        return {
            "ok": self.ok,
            "alias": self.alias,
            "alias_target": self.alias_target,
            "production_version": self.production_version,
            "production_collection": self.production_collection,
            "pending_intent": None if intent is None else {
                "id": intent.id, "action": intent.action, "from_version": intent.from_version,
                "to_version": intent.to_version, "actor": intent.actor, "started_at": intent.started_at.isoformat(),
            },
            "problems": [p.to_dict() for p in self.problems],
        }


def serving_state(
    model: str,
    *,
    versions: list[ModelVersion],
    pending: PromotionIntent | None,
    vectors: AliasReader,
) -> ServingState:
    """Compare the registry's rows of ``model`` (``versions``, ``pending``) with the vector store's alias."""
    alias = production_alias(model)
    reconcile = _reconcile(model)
    target = vectors.alias_target(alias)
    by_collection = {v.collection.name: v.version for v in versions if v.collection is not None}
    present = {name: bool(vectors.collection_exists(name)) for name in by_collection}
    production = next((v for v in versions if v.status == "production"), None)
    expected = production.collection.name if production is not None and production.collection else None
    problems: list[ServingProblem] = []
    if pending is not None:
        involved = tuple(v for v in (pending.from_version, pending.to_version) if v is not None)
        problems.append(ServingProblem(
            "pending_intent",
            f"{pending.describe()} is pending: its process stopped before finishing (or is still running)",
            reconcile,
            tuple(dict.fromkeys(involved)),
        ))
    if production is not None and (expected is None or not present.get(expected, False)):
        shown = f"'{expected}'" if expected else "(none recorded)"
        problems.append(ServingProblem(
            "missing_collection",
            f"the collection {shown} of production version {production.version} of model '{model}' does not exist "
            "in the vector store",
            f"write it again with `towerctl embeddings write {model} --version {production.version}` and {reconcile}, "
            "or promote (or roll back to) a version whose collection exists",
            (production.version,),
        ))
    if target is not None and target != expected and not (present.get(target) or vectors.collection_exists(target)):
        problems.append(ServingProblem(
            "missing_collection",
            f"alias '{alias}' points to '{target}', which does not exist in the vector store",
            reconcile,
            tuple(v for v in (by_collection.get(target),) if v is not None),
        ))
    if target != expected:
        problems.append(_drift(model, alias, target, production, expected, by_collection, reconcile))
    serves = target is not None and (present.get(target) if target in present else vectors.collection_exists(target))
    return ServingState(
        model=model, alias=alias, alias_target=target,
        production_version=production.version if production is not None else None,
        production_collection=expected, pending_intent=pending, collections_present=present,
        collection_versions=by_collection, problems=tuple(problems), alias_serves=bool(serves),
        versions=tuple(versions),
    )


def _drift(
    model: str, alias: str, target: str | None, production: ModelVersion | None, expected: str | None,
    by_collection: dict[str, int], reconcile: str,
) -> ServingProblem:
    served = by_collection.get(target) if target is not None else None
    where = "is missing" if target is None else f"points to '{target}'" + (
        f" (version {served})" if served is not None else "")
    registry = (
        f"the registry's production version is {production.version} ('{expected}')" if production is not None
        else "the registry has no production version"
    )
    versions = tuple(v for v in (production.version if production else None, served) if v is not None)
    return ServingProblem("alias_drift", f"alias '{alias}' of model '{model}' {where}, but {registry}", reconcile,
                          versions)


def _reconcile(model: str) -> str:
    return f"run `towerctl models reconcile {model}`"


def require_consistent(state: ServingState, *, replacing_production: bool = False) -> None:
    """Refuse (ConflictError, exit 4) a state-changing command while the registry and the vector store disagree.

    ``replacing_production`` (promote, rollback): a lost production collection with nothing served
    (:attr:`ServingState.production_lost`) is no reason to refuse, since moving the alias to an existing collection
    repairs it.
    """
    if state.ok or (replacing_production and state.production_lost):
        return
    found = "; ".join(p.fact for p in state.problems)
    raise ConflictError(
        f"Model '{state.model}' is not in a consistent serving state ({found}); {repair_of(state.problems)} first."
    )


def repair_of(problems: tuple[ServingProblem, ...]) -> str:
    """The repair of several problems: the longest one names every step of the others (reconcile is in each)."""
    return max((p.repair for p in problems), key=len)


def read_serving_state(store: Any, vectors: AliasReader, model: str) -> ServingState:
    """The serving state of ``model`` from one read-only registry snapshot (``store``: a ``SqlRegistryStore``)."""
    with store.reading(model) as unit:
        versions = unit.versions()
        pending = unit.pending_intent()
    return serving_state(model, versions=versions, pending=pending, vectors=vectors)
