"""Root fixtures: registry database URLs on SQLite and on the private PostgreSQL of ``ops/postgres.sh``.

``database_url`` runs a test twice: on a temporary SQLite file and on a fresh PostgreSQL database created for that
test (dropped afterwards) on the cluster named by ``TOWER_TEST_DATABASE_URL``. Without that variable the PostgreSQL
half is skipped, unless ``TOWER_REQUIRE_POSTGRES=1`` (set by ``make test``), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_ENV = "TOWER_TEST_DATABASE_URL"
REQUIRE_POSTGRES_ENV = "TOWER_REQUIRE_POSTGRES"


def _postgres_server_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        message = f"{POSTGRES_ENV} is not set; start PostgreSQL with `bash ops/postgres.sh start` and export its URL"
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            pytest.fail(f"{REQUIRE_POSTGRES_ENV}=1 but {message}")
        pytest.skip(message)
    return url


def _admin_conninfo(server_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped at teardown); its SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    server_url = _postgres_server_url()
    name = f"tower_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(_admin_conninfo(server_url), autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            pytest.fail(f"PostgreSQL at {POSTGRES_ENV} cannot be reached: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_ENV} cannot be reached: {exc}")
    yield make_url(server_url).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    with psycopg.connect(_admin_conninfo(server_url), autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A registry URL with no schema yet: a temporary SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture
def migrated_database_url(database_url: str) -> str:
    """``database_url`` with the registry schema at head."""
    from tower_platform.registry.migration import upgrade_schema

    upgrade_schema(database_url)
    return database_url


@pytest.fixture
def registry_store(migrated_database_url: str) -> Iterator[object]:
    """A :class:`SqlRegistryStore` on a migrated database (closed at teardown)."""
    from tower_platform.registry.store import SqlRegistryStore

    store = SqlRegistryStore(migrated_database_url)
    yield store
    store.close()


def write_tower(path, *, model: str, version: int | None, feature_service: str, dimension: int = 4) -> None:
    """A tiny but valid ONNX file (Identity on a float [B, D] input) carrying the towers' metadata_props."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["embedding"])],
        "tower",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", dimension])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["B", dimension])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 10
    metadata = {"model_name": model, "feature_service": feature_service, "dimension": str(dimension)}
    if version is not None:
        metadata["model_version"] = str(version)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


@pytest.fixture
def exported_model():
    """Factory: write query.onnx, item.onnx and spec.json into a folder; returns artifacts {name: (path, sha256)}."""
    import hashlib
    import json
    from pathlib import Path

    def _write(folder, *, model: str = "movies", version: int | None = None, feature_service: str = "movies_fs",
               spec_extra: dict | None = None, seed: int = 0) -> dict[str, tuple[str, str]]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("query.onnx", "item.onnx"):
            write_tower(folder / name, model=model, version=version, feature_service=feature_service)
        spec = {
            "format_version": 1,
            "model": model,
            "feature_service": feature_service,
            "features": ["user_profile__age", "item_profile__genres"],
            "training_config": {"lr": 0.01, "seed": seed},
            "fingerprint": hashlib.sha256(f"training-set-{seed}".encode()).hexdigest(),
            "time_window": {"start": "2018-01-01T00:00:00+00:00", "end": "2018-06-01T00:00:00+00:00"},
            "metrics": {"recall@100": 0.25 + seed / 100},
            **(spec_extra or {}),
        }
        if version is not None:
            spec["version"] = version
        (folder / "spec.json").write_text(json.dumps(spec))
        return {
            name: (str(folder / name), hashlib.sha256((folder / name).read_bytes()).hexdigest())
            for name in ("query.onnx", "item.onnx", "spec.json")
        }

    return _write

