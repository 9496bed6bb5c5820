"""promote / rollback / gc against a real registry (SQLite and PostgreSQL) and Qdrant in memory."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tower_platform.errors import ConflictError, IntegrityError, UnavailableError
from tower_platform.naming import collection_name, production_alias
from tower_platform.registry.entities import AuditEvent
from tower_platform.registry.promotion import gc, production_stack, promote, rollback, rollback_target_version
from tower_platform.vectors.store import QdrantVectorStore
from registry_support import register_placeholder_version

POINTS = 3


@pytest.fixture
def vectors():
    store = QdrantVectorStore.memory()
    yield store
    store.close()


@pytest.fixture
def artifacts_root(tmp_path) -> Path:
    return tmp_path / "artifacts"


def _add_version(registry, vectors, exported_model, root: Path, *, index: bool = True, write: bool = True) -> int:
    number = max((m.latest_version or 0 for m in registry.list_models()), default=0)
    folder = root / "movies" / f"v{number + 1}"
    created = register_placeholder_version(registry, artifacts=exported_model(folder, seed=number + 1))
    name = collection_name("movies", created.version)
    if write:
        vectors.create_collection(name, dimension=4)
        vectors.upsert(name, [f"i{k}" for k in range(POINTS)], np.eye(POINTS, 4), [{}] * POINTS)
    if index:
        registry.record_collection(
            "movies", created.version, name=name, point_count=POINTS, dimension=4, distance="cosine", verified=True
        )
        registry.mark_indexed("movies", created.version, actor="test")
    return created.version


def _snapshot(registry, vectors):
    """Everything a failed operation must leave unchanged."""
    return (
        [(v.version, v.status) for v in registry.list_versions("movies")],
        registry.production_version("movies").version if registry.production_version("movies") else None,
        len(registry.audit_log("movies")),
        vectors.alias_target(production_alias("movies")),
    )


def test_promote_moves_alias_statuses_and_writes_one_audit_event(registry_store, vectors, exported_model, artifacts_root):
    for _ in range(2):
        _add_version(registry_store, vectors, exported_model, artifacts_root)
    first = promote(registry_store, vectors, "movies", 1, actor="alice", reason="launch")
    assert first.changed and first.previous_version is None
    assert vectors.alias_target("movies") == "movies__v1"
    second = promote(registry_store, vectors, "movies", 2, actor="bob")
    assert (second.version, second.previous_version) == (2, 1)
    assert vectors.alias_target("movies") == "movies__v2"
    assert [(v.version, v.status) for v in registry_store.list_versions("movies")] == [(1, "indexed"), (2, "production")]
    assert registry_store.production_version("movies").version == 2
    promotions = [e for e in registry_store.audit_log("movies") if e.action == "promote"]
    assert [(e.from_version, e.to_version, e.actor) for e in promotions] == [(None, 1, "alice"), (1, 2, "bob")]
    assert promotions[1].details["alias_before"] == "movies__v1" and not promotions[1].details["alias_drift"]
    assert promotions[0].reason == "launch"


def test_promoting_the_production_version_again_changes_nothing(registry_store, vectors, exported_model, artifacts_root):
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    promote(registry_store, vectors, "movies", 1, actor="t")
    before = _snapshot(registry_store, vectors)
    again = promote(registry_store, vectors, "movies", 1, actor="t")
    assert not again.changed and again.event is None
    assert _snapshot(registry_store, vectors) == before


def test_promote_of_an_unindexed_version_is_refused_and_nothing_changes(
    registry_store, vectors, exported_model, artifacts_root
):
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    promote(registry_store, vectors, "movies", 1, actor="t")
    _add_version(registry_store, vectors, exported_model, artifacts_root, index=False)
    before = _snapshot(registry_store, vectors)
    with pytest.raises(ConflictError, match=r"version 2 has no verified collection; run `towerctl embeddings write"):
        promote(registry_store, vectors, "movies", 2, actor="t")
    assert _snapshot(registry_store, vectors) == before


def test_promote_refuses_a_tampered_artifact_and_nothing_changes(registry_store, vectors, exported_model, artifacts_root):
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    promote(registry_store, vectors, "movies", 1, actor="t")
    query = Path(registry_store.get_version("movies", 2).artifact("query.onnx").path)
    query.write_bytes(query.read_bytes().replace(b"movies", b"mOvies"))
    before = _snapshot(registry_store, vectors)
    with pytest.raises(IntegrityError, match="query.onnx of model 'movies' version 2"):
        promote(registry_store, vectors, "movies", 2, actor="t")
    assert _snapshot(registry_store, vectors) == before


def test_promote_refuses_a_collection_missing_or_short_in_qdrant(registry_store, vectors, exported_model, artifacts_root):
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    vectors.delete_collection("movies__v1")
    with pytest.raises(ConflictError, match="'movies__v1' of model 'movies' version 1 does not exist"):
        promote(registry_store, vectors, "movies", 1, actor="t")
    vectors.create_collection("movies__v1", dimension=4)
    vectors.upsert("movies__v1", ["only"], np.eye(1, 4), [{}])  # 1 point, the registry verified 3
    with pytest.raises(IntegrityError, match="holds 1 points, not the 3"):
        promote(registry_store, vectors, "movies", 1, actor="t")
    assert vectors.alias_target("movies") is None
    assert registry_store.get_version("movies", 1).status == "indexed"


class _FailingSwap:
    """A vector store whose alias swap fails (as when Qdrant is down at that moment)."""

    def __init__(self, inner: QdrantVectorStore) -> None:
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def swap_alias(self, alias, collection, *, previous):
        raise UnavailableError("Qdrant at memory failed to move an alias; check that it is running.")


def test_a_failed_swap_rolls_the_registry_transaction_back(registry_store, vectors, exported_model, artifacts_root):
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    promote(registry_store, vectors, "movies", 1, actor="t")
    before = _snapshot(registry_store, vectors)
    with pytest.raises(UnavailableError):
        promote(registry_store, _FailingSwap(vectors), "movies", 2, actor="t")
    assert _snapshot(registry_store, vectors) == before


class _CommitFailsAfterBlock:
    """A registry whose second locked transaction (the one completing the intent, after the alias swap) fails when
    it ends, as a lost connection at COMMIT would; the first (the intent) and the third (its abort) commit."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self._calls = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    @contextmanager
    def locked_model(self, name):
        self._calls += 1
        with self._inner.locked_model(name) as unit:
            yield unit
            if self._calls == 2:
                raise UnavailableError("Cannot reach the registry database at test; start it or fix TOWER_DATABASE_URL.")


@pytest.mark.parametrize("first_promotion", [True, False])
def test_a_failed_commit_after_the_swap_swaps_the_alias_back(
    registry_store, vectors, exported_model, artifacts_root, first_promotion
):
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    if not first_promotion:
        promote(registry_store, vectors, "movies", 1, actor="t")
    before = _snapshot(registry_store, vectors)
    with pytest.raises(UnavailableError):
        promote(_CommitFailsAfterBlock(registry_store), vectors, "movies", 2, actor="t")
    assert _snapshot(registry_store, vectors) == before  # alias back at v1 (or absent again), registry untouched
    with registry_store.reading("movies") as unit:
        (intent,) = [i for i in unit.intents() if i.to_version == 2]
    assert intent.state == "aborted" and "commit failed" in intent.resolution and "moved back" in intent.resolution


def test_rollback_returns_to_the_previous_production_version(registry_store, vectors, exported_model, artifacts_root):
    for _ in range(3):
        _add_version(registry_store, vectors, exported_model, artifacts_root)
    for version in (1, 2, 3):
        promote(registry_store, vectors, "movies", version, actor="t")
    result = rollback(registry_store, vectors, "movies", actor="carol", reason="bad metrics")
    assert (result.version, result.previous_version) == (2, 3)
    assert vectors.alias_target("movies") == "movies__v2"
    statuses = {v.version: v.status for v in registry_store.list_versions("movies")}
    assert statuses == {1: "indexed", 2: "production", 3: "rolled_back"}
    event = registry_store.audit_log("movies")[-1]
    assert (event.action, event.from_version, event.to_version, event.actor, event.reason) == (
        "rollback", 3, 2, "carol", "bad metrics"
    )
    assert rollback(registry_store, vectors, "movies", actor="t").version == 1
    assert vectors.alias_target("movies") == "movies__v1"


def test_rollback_with_no_previous_version_is_refused_and_nothing_changes(
    registry_store, vectors, exported_model, artifacts_root
):
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    with pytest.raises(ConflictError, match="Model 'movies' has no previous production version to roll back to"):
        rollback(registry_store, vectors, "movies", actor="t")  # nothing in production at all
    promote(registry_store, vectors, "movies", 1, actor="t")
    before = _snapshot(registry_store, vectors)
    with pytest.raises(ConflictError, match="Model 'movies' has no previous production version to roll back to"):
        rollback(registry_store, vectors, "movies", actor="t")
    assert _snapshot(registry_store, vectors) == before


def test_dry_runs_check_but_change_nothing(registry_store, vectors, exported_model, artifacts_root):
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    promote(registry_store, vectors, "movies", 1, actor="t")
    before = _snapshot(registry_store, vectors)
    planned = promote(registry_store, vectors, "movies", 2, actor="t", dry_run=True)
    assert planned.dry_run and (planned.version, planned.previous_version) == (2, 1)
    assert _snapshot(registry_store, vectors) == before
    promote(registry_store, vectors, "movies", 2, actor="t")
    before = _snapshot(registry_store, vectors)
    assert rollback(registry_store, vectors, "movies", actor="t", dry_run=True).version == 1
    assert _snapshot(registry_store, vectors) == before


def _event(action: str, from_version: int | None, to_version: int) -> AuditEvent:
    return AuditEvent(0, "m", to_version, action, None, None, from_version, to_version, "t", None)


def test_production_stack_replays_promotions_and_rollbacks():
    # promote 1, 2, 3 -> [1, 2, 3]; rollback 3->2 -> [1, 2]; promote 4 -> [1, 2, 4]; promote 1 -> [1, 2, 4, 1];
    # rollback 1->4 removes every 1 -> [2, 4]
    events = [_event("promote", None, 1), _event("promote", 1, 2), _event("promote", 2, 3), _event("rollback", 3, 2),
              _event("promote", 2, 4), _event("promote", 4, 1), _event("rollback", 1, 4)]
    assert production_stack(events[:3]) == [1, 2, 3]
    assert production_stack(events[:4]) == [1, 2]
    assert production_stack(events[:6]) == [1, 2, 4, 1]
    assert production_stack(events) == [2, 4]
    statuses = {1: "rolled_back", 2: "indexed", 3: "rolled_back", 4: "production"}
    assert rollback_target_version(events, statuses=statuses, production=4) == 2
    assert rollback_target_version(events, statuses={**statuses, 2: "retired"}, production=4) is None
    assert rollback_target_version([], statuses={}, production=None) is None


def test_gc_keeps_newest_production_and_rollback_target_and_deletes_the_rest(
    registry_store, vectors, exported_model, artifacts_root
):
    for _ in range(5):
        _add_version(registry_store, vectors, exported_model, artifacts_root)
    for version in (1, 2):
        promote(registry_store, vectors, "movies", version, actor="t")
    # production 2, rollback target 1, newest 5: versions 3 and 4 go
    before = _snapshot(registry_store, vectors)
    planned = gc(registry_store, vectors, "movies", keep=1, artifacts_root=artifacts_root, dry_run=True)
    assert [r.version for r in planned.retired] == [3, 4] and planned.kept == (1, 2, 5)
    assert _snapshot(registry_store, vectors) == before and vectors.collection_exists("movies__v3")

    done = gc(registry_store, vectors, "movies", keep=1, artifacts_root=artifacts_root, dry_run=False, actor="ops")
    assert [r.version for r in done.retired] == [3, 4]
    assert sorted(vectors.list_collections()) == ["movies__v1", "movies__v2", "movies__v5"]
    assert sorted(p.name for p in (artifacts_root / "movies").iterdir()) == ["v1", "v2", "v5"]
    statuses = {v.version: v.status for v in registry_store.list_versions("movies")}
    assert statuses == {1: "indexed", 2: "production", 3: "retired", 4: "retired", 5: "indexed"}
    assert registry_store.get_version("movies", 3).collection.deleted_at is not None
    assert [e.version for e in registry_store.audit_log("movies") if e.action == "retire"] == [3, 4]
    assert vectors.alias_target("movies") == "movies__v2"
    again = gc(registry_store, vectors, "movies", keep=1, artifacts_root=artifacts_root, dry_run=False)
    assert again.retired == ()  # nothing left to do
    assert rollback(registry_store, vectors, "movies", actor="t").version == 1  # the target survived


def test_gc_never_deletes_folders_outside_the_artifacts_root(registry_store, vectors, exported_model, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    for _ in range(2):
        _add_version(registry_store, vectors, exported_model, elsewhere)
    result = gc(registry_store, vectors, "movies", keep=0, artifacts_root=tmp_path / "artifacts", dry_run=False)
    assert [(r.version, r.artifact_dir) for r in result.retired] == [(1, None), (2, None)]
    assert (elsewhere / "movies" / "v1" / "query.onnx").exists()
    assert vectors.list_collections() == []


def test_a_drifted_alias_refuses_promotion_until_reconcile_moves_it_back(
    registry_store, vectors, exported_model, artifacts_root
):
    from tower_platform.registry.reconcile import reconcile

    _add_version(registry_store, vectors, exported_model, artifacts_root)
    _add_version(registry_store, vectors, exported_model, artifacts_root)
    promote(registry_store, vectors, "movies", 1, actor="t")
    vectors.swap_alias("movies", "movies__v2", previous="movies__v1")  # moved by hand behind the registry's back
    before = _snapshot(registry_store, vectors)
    for attempt in (lambda: promote(registry_store, vectors, "movies", 1, actor="t"),
                    lambda: promote(registry_store, vectors, "movies", 2, actor="t"),
                    lambda: rollback(registry_store, vectors, "movies", actor="t")):
        with pytest.raises(ConflictError, match=r"points to 'movies__v2' \(version 2\), but the registry's production "
                                                r"version is 1 .*run `towerctl models reconcile movies` first"):
            attempt()
    assert _snapshot(registry_store, vectors) == before  # refused: nothing written
    repaired = reconcile(registry_store, vectors, "movies", actor="ops", reason="hand edit")
    assert [s.action for s in repaired.steps] == ["realign_alias"] and repaired.repaired
    assert vectors.alias_target("movies") == "movies__v1"  # the registry decided v1; no intent said otherwise
    assert registry_store.production_version("movies").version == 1
    event = registry_store.audit_log("movies")[-1]
    assert (event.action, event.actor, event.reason) == ("reconcile", "ops", "hand edit")
    assert event.details["alias_before"] == "movies__v2" and event.details["collection"] == "movies__v1"
    assert rollback_target_version(registry_store.audit_log("movies"), statuses={1: "production", 2: "indexed"},
                                   production=1) is None  # a realignment is not a production change
    assert promote(registry_store, vectors, "movies", 2, actor="t").changed  # usable again


def test_a_retired_or_rolled_back_version_is_not_promotable(registry_store, vectors, exported_model, artifacts_root):
    for _ in range(3):
        _add_version(registry_store, vectors, exported_model, artifacts_root)
    promote(registry_store, vectors, "movies", 2, actor="t")
    promote(registry_store, vectors, "movies", 3, actor="t")
    rollback(registry_store, vectors, "movies", actor="t")  # 3 -> rolled_back
    with pytest.raises(ConflictError, match="version 3 is rolled_back, not indexed"):
        promote(registry_store, vectors, "movies", 3, actor="t")
    gc(registry_store, vectors, "movies", keep=0, artifacts_root=artifacts_root, dry_run=False)  # 1 and 3 retired
    with pytest.raises(ConflictError, match="version 1 is retired"):
        promote(registry_store, vectors, "movies", 1, actor="t")
    with pytest.raises(ConflictError, match="version 3 is retired"):
        promote(registry_store, vectors, "movies", 3, actor="t")
    assert vectors.alias_target("movies") == "movies__v2"
