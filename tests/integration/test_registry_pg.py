"""What only PostgreSQL shows: the model row lock, racing writers, column types, error translation."""

from __future__ import annotations

import threading

import psycopg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tower_platform.errors import ConflictError
from tower_platform.registry.database import create_registry_engine, translate_db_error
from tower_platform.registry.migration import upgrade_schema
from tower_platform.registry.store import SqlRegistryStore

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store(fresh_postgres_url):
    upgrade_schema(fresh_postgres_url)
    store = SqlRegistryStore(fresh_postgres_url)
    yield store
    store.close()


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _try_lock_row(url: str, name: str) -> bool:
    """From an independent connection: can the models row be locked within 100 ms?"""
    with psycopg.connect(_conninfo(url)) as connection:
        connection.execute("SET lock_timeout = '100ms'")
        try:
            connection.execute("SELECT id FROM models WHERE name = %s FOR UPDATE", (name,))
        except psycopg.errors.LockNotAvailable:
            return False
        return True


def test_locked_model_holds_the_row_lock_until_its_transaction_ends(pg_store, fresh_postgres_url):
    pg_store.ensure_model("movies")
    assert _try_lock_row(fresh_postgres_url, "movies")
    with pg_store.locked_model("movies"):
        assert not _try_lock_row(fresh_postgres_url, "movies")  # a second promoter would wait here
        assert pg_store.list_models()[0].name == "movies"  # plain reads are not blocked
    assert _try_lock_row(fresh_postgres_url, "movies")


def test_a_lock_timeout_becomes_a_conflict_error_asking_to_retry(pg_store, fresh_postgres_url):
    pg_store.ensure_model("movies")
    engine = create_registry_engine(fresh_postgres_url)
    try:
        with pg_store.locked_model("movies"), engine.connect() as connection:
            connection.execute(text("SET lock_timeout = '50ms'"))
            with pytest.raises(sa_exc.OperationalError) as caught:
                connection.execute(text("SELECT id FROM models WHERE name = 'movies' FOR UPDATE"))
        translated = translate_db_error(caught.value, url=fresh_postgres_url)
        assert isinstance(translated, ConflictError) and "run the command again" in translated.message
    finally:
        engine.dispose()


def test_racing_ensure_model_creates_one_row_without_errors(pg_store):
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        try:
            barrier.wait()
            pg_store.ensure_model("books")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [m.name for m in pg_store.list_models()] == ["books"]


def test_columns_use_native_json_and_timestamptz(pg_store, fresh_postgres_url):
    with psycopg.connect(_conninfo(fresh_postgres_url)) as connection:
        rows = connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'model_versions' "
            "AND column_name IN ('features', 'metrics', 'training_config', 'created_at', 'window_start')"
        ).fetchall()
    assert dict(rows) == {
        "features": "json",
        "metrics": "json",
        "training_config": "json",
        "created_at": "timestamp with time zone",
        "window_start": "timestamp with time zone",
    }


def test_constraint_names_follow_the_naming_convention(pg_store, fresh_postgres_url):
    with psycopg.connect(_conninfo(fresh_postgres_url)) as connection:
        names = {
            r[0]
            for r in connection.execute(
                "SELECT conname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid WHERE t.relname = 'model_versions'"
            ).fetchall()
        }
    assert names == {
        "pk_model_versions",
        "uq_model_versions_model_id_version",
        "fk_model_versions_model_id_models",
        "ck_model_versions_status",
        "ck_model_versions_version_positive",
    }
