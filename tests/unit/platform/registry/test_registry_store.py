"""SqlRegistryStore on SQLite and PostgreSQL: CRUD, lifecycle, integrity, schema checks, error translation."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tower_platform.errors import (
    ConfigError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    SchemaOutOfDateError,
    UnavailableError,
    UsageError,
)
from tower_platform.registry.migration import downgrade_schema, head_revision, upgrade_schema
from tower_platform.registry.store import SqlRegistryStore


def _register(store, artifacts, *, model="movies", version=None, actor="alice", reason=None):
    return store.register_version(
        model,
        artifacts=artifacts,
        feature_service="movies_fs",
        features=["user_profile__age", "item_profile__genres"],
        training_config={"lr": 0.01, "path": Path("/data/x")},
        fingerprint="ab" * 32,
        time_window=(datetime(2018, 1, 1), datetime(2018, 6, 1, tzinfo=UTC)),
        estimator_path=None,
        metrics={"recall@100": 0.25, "undefined": float("nan")},
        actor=actor,
        reason=reason,
        version=version,
    )


def _index(store, model, version, *, verified=True):
    store.record_collection(
        model, version, name=f"{model}__v{version}", point_count=10, dimension=4, distance="cosine", verified=verified
    )
    return store.mark_indexed(model, version, actor="bob")


def test_register_assigns_consecutive_versions_and_round_trips_every_field(registry_store, exported_model, tmp_path):
    first = _register(registry_store, exported_model(tmp_path / "v1", seed=1), reason="first")
    second = _register(registry_store, exported_model(tmp_path / "v2", seed=2))
    assert (first.version, second.version) == (1, 2)
    stored = registry_store.get_version("movies", 1)
    assert stored.status == "registered"
    assert stored.features == ["user_profile__age", "item_profile__genres"]
    assert stored.training_config == {"lr": 0.01, "path": "/data/x"}  # Path stored as its string
    assert stored.metrics == {"recall@100": 0.25, "undefined": None}  # NaN is not JSON: stored as null
    assert stored.window_start == datetime(2018, 1, 1, tzinfo=UTC)  # naive input is read as UTC
    assert stored.window_end == datetime(2018, 6, 1, tzinfo=UTC)
    assert stored.created_by == "alice" and stored.created_at.tzinfo is not None
    assert stored.artifact("query.onnx").sha256 == exported_model(tmp_path / "v1", seed=1)["query.onnx"][1]
    assert [v.version for v in registry_store.list_versions("movies")] == [1, 2]
    (model,) = registry_store.list_models()
    assert (model.name, model.latest_version, model.version_count, model.production_version) == ("movies", 2, 2, None)
    events = registry_store.audit_log("movies")
    assert [(e.action, e.version, e.to_status, e.actor) for e in events] == [
        ("register", 1, "registered", "alice"),
        ("register", 2, "registered", "alice"),
    ]
    assert events[0].reason == "first"


def test_register_with_an_explicit_version_refuses_a_taken_number(registry_store, exported_model, tmp_path):
    artifacts = exported_model(tmp_path / "v", seed=1)
    assert _register(registry_store, artifacts, version=5).version == 5
    with pytest.raises(ConflictError, match="already has a version 5"):
        _register(registry_store, artifacts, version=5)
    assert _register(registry_store, artifacts).version == 6  # next after the highest


@pytest.mark.parametrize("tamper", ["changed", "missing"])
def test_register_refuses_an_artifact_whose_sha256_differs_and_writes_nothing(
    registry_store, exported_model, tmp_path, tamper
):
    artifacts = exported_model(tmp_path / "v1")
    path = Path(artifacts["item.onnx"][0])
    if tamper == "changed":
        path.write_bytes(path.read_bytes() + b"\0")
    else:
        path.unlink()
    with pytest.raises(IntegrityError, match="item.onnx"):
        _register(registry_store, artifacts)
    assert registry_store.list_models() == []


def test_register_refuses_bad_names_and_incomplete_artifacts(registry_store, exported_model, tmp_path):
    artifacts = exported_model(tmp_path / "v1")
    for bad in ("", "a__b", "-x", "has space", "x" * 65):
        with pytest.raises(UsageError):
            _register(registry_store, artifacts, model=bad)
    partial = {k: v for k, v in artifacts.items() if k != "spec.json"}
    with pytest.raises(UsageError, match="spec.json"):
        _register(registry_store, partial)
    assert registry_store.list_models() == []


def test_unknown_model_and_version_raise_not_found_naming_them(registry_store, exported_model, tmp_path):
    with pytest.raises(NotFoundError, match="Model 'ghost' is not registered"):
        registry_store.get_version("ghost", 1)
    _register(registry_store, exported_model(tmp_path / "v1"))
    with pytest.raises(NotFoundError, match=r"Model 'movies' has no version 7; see `towerctl models list movies`"):
        registry_store.get_version("movies", 7)
    with pytest.raises(NotFoundError):
        registry_store.audit_log("ghost")


def test_mark_indexed_needs_a_verified_collection_and_is_safe_to_rerun(registry_store, exported_model, tmp_path):
    _register(registry_store, exported_model(tmp_path / "v1"))
    with pytest.raises(ConflictError, match="no verified collection"):
        registry_store.mark_indexed("movies", 1, actor="bob")
    with pytest.raises(ConflictError, match="towerctl embeddings write movies --version 1"):
        _index(registry_store, "movies", 1, verified=False)
    assert registry_store.get_version("movies", 1).status == "registered"
    indexed = _index(registry_store, "movies", 1)
    assert indexed.status == "indexed"
    assert indexed.collection.name == "movies__v1" and indexed.collection.verified
    events_before = len(registry_store.audit_log("movies"))
    assert registry_store.mark_indexed("movies", 1, actor="bob").status == "indexed"
    assert len(registry_store.audit_log("movies")) == events_before  # the re-run wrote no event
    actions = [e.action for e in registry_store.audit_log("movies")]
    assert actions == ["register", "collection", "collection", "index"]


def test_a_collection_keeps_its_name(registry_store, exported_model, tmp_path):
    _register(registry_store, exported_model(tmp_path / "v1"))
    _index(registry_store, "movies", 1)
    with pytest.raises(ConflictError, match="already has collection 'movies__v1'"):
        registry_store.record_collection(
            "movies", 1, name="other", point_count=1, dimension=4, distance="cosine", verified=True
        )


def test_locked_model_rolls_back_every_write_of_a_failed_block(registry_store, exported_model, tmp_path):
    _register(registry_store, exported_model(tmp_path / "v1"))
    with pytest.raises(RuntimeError), registry_store.locked_model("movies") as unit:
        unit.set_status(1, "retired")
        unit.audit("retire", version=1, actor="x")
        raise RuntimeError("boom")
    assert registry_store.get_version("movies", 1).status == "registered"
    assert [e.action for e in registry_store.audit_log("movies")] == ["register"]


def test_concurrent_registrations_get_distinct_consecutive_versions(registry_store, exported_model, tmp_path):
    artifacts = exported_model(tmp_path / "v", seed=3)
    numbers: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(3):
                numbers.append(_register(registry_store, artifacts).version)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(numbers) == list(range(1, 13))


def test_opening_refuses_a_database_without_the_schema(database_url):
    with pytest.raises(SchemaOutOfDateError, match="towerctl db upgrade"):
        SqlRegistryStore(database_url)


def test_opening_refuses_a_schema_that_is_not_at_head(migrated_database_url):
    engine = create_engine(migrated_database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDateError, match=rf"at revision 0000_older, not at {head_revision()}; run `towerctl db upgrade`"):
        SqlRegistryStore(migrated_database_url)


def test_opening_refuses_a_downgraded_schema(migrated_database_url):
    downgrade_schema(migrated_database_url, revision="base")
    with pytest.raises(SchemaOutOfDateError, match="has no Tower Platform schema; run `towerctl db upgrade`"):
        SqlRegistryStore(migrated_database_url)
    upgrade_schema(migrated_database_url)
    SqlRegistryStore(migrated_database_url).close()  # at head again: opens


def test_missing_sqlite_file_is_not_created_by_opening(tmp_path):
    path = tmp_path / "nothing" / "registry.db"
    with pytest.raises(SchemaOutOfDateError, match="does not exist yet"):
        SqlRegistryStore(f"sqlite:///{path}")
    assert not path.exists()


def test_unreachable_postgresql_is_unavailable_with_a_one_sentence_message_without_password():
    url = "postgresql://tower:s3cret@127.0.0.1:9/registry"  # port 9 (discard): nothing listens
    with pytest.raises(UnavailableError) as caught:
        SqlRegistryStore(url)
    message = str(caught.value)
    assert message.startswith("Cannot reach the registry database at postgresql://tower:***@127.0.0.1:9/registry")
    assert message.endswith("; start it or fix TOWER_DATABASE_URL.")
    assert "s3cret" not in message and message.count(".") >= 1 and "\n" not in message


def test_a_url_of_another_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="mysql"):
        SqlRegistryStore("mysql://u@h/db")
