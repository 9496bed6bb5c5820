"""The registry's database connection: engine creation, transaction modes and translation of driver errors.

PostgreSQL always goes through psycopg 3 (``postgresql://`` and ``postgresql+psycopg2://`` are rewritten).
SQLite gets explicit transactions: the driver's implicit BEGIN is switched off and every transaction starts with
``BEGIN`` or, for writers, ``BEGIN IMMEDIATE`` (the write lock is taken up front, so two writers never both read the
same next version number). The execution option :data:`SQLITE_BEGIN_OPTION` picks the mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from tower_platform.errors import ConfigError, ConflictError, TowerError, UnavailableError
from tower_platform.redaction import redact_url

SQLITE_BEGIN_OPTION = "tower_sqlite_begin"
SQLITE_BUSY_TIMEOUT_S = 30.0
POSTGRES_CONNECT_TIMEOUT_S = 5

# SQLSTATEs of PostgreSQL that mean "another transaction got in the way; retry".
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}


def parse_url(url: str | URL) -> URL:
    """The registry URL, parsed; an unparsable one (its text is not shown: it may hold a password) or one of
    another backend is a ConfigError naming TOWER_DATABASE_URL."""
    if isinstance(url, URL):
        return url
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        detail = "a port that is not a number" if isinstance(exc, ValueError) else "not of the form SCHEME://..."
        raise ConfigError(
            f"The registry URL in TOWER_DATABASE_URL cannot be parsed ({detail}; the value is not shown as it may "
            "hold a password); set it to sqlite:///PATH or a postgresql+psycopg:// URL with user, password, host, port and "
            "database."
        ) from None
    if parsed.get_backend_name() == "postgresql" and parsed.drivername != "postgresql+psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"The registry URL {redacted_url(url)} in TOWER_DATABASE_URL names the backend "
            f"{parsed.get_backend_name()!r}; use sqlite:///PATH or a postgresql+psycopg:// URL."
        )
    return parsed


def redacted_url(url: str | URL) -> str:
    """The URL with its password masked, fit for messages and logs (:func:`tower_platform.redaction.redact_url`)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return redact_url(url)


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a SQLite URL (None for other backends and for in-memory SQLite)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser().resolve()


def create_registry_engine(url: str) -> Engine:
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return create_engine(
        parsed,
        pool_pre_ping=True,
        connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
    )


def _sqlite_engine(parsed: URL) -> Engine:
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGIN from the driver: we emit our own
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def writer_engine(engine: Engine) -> Engine:
    """The same pool, with SQLite transactions that take the write lock at BEGIN (no-op elsewhere)."""
    return engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})


def translate_db_error(exc: sa_exc.SQLAlchemyError, *, url: str) -> TowerError:
    """A registry database failure as one of our errors (the caller raises it ``from exc``)."""
    where = redacted_url(url)
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return ConflictError(
            f"The registry database at {where} aborted a transaction that collided with another one; run the command again."
        )
    if isinstance(exc, sa_exc.IntegrityError):
        return ConflictError(
            f"The registry database at {where} refused a change that conflicts with existing rows ({_first_line(exc)}); "
            "check `towerctl models list` and run the command again."
        )
    if isinstance(exc, sa_exc.OperationalError) and "locked" in str(exc.orig).lower():
        return UnavailableError(
            f"The registry database at {where} stayed locked by another writer for {SQLITE_BUSY_TIMEOUT_S:.0f} s; "
            "wait for it to finish and run the command again."
        )
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    ) or (sqlstate or "").startswith("08"):
        return unavailable(url)
    return TowerError(f"The registry database at {where} failed: {_first_line(exc)}.")


def unavailable(url: str) -> UnavailableError:
    return UnavailableError(
        f"Cannot reach the registry database at {redacted_url(url)}; start it or fix TOWER_DATABASE_URL."
    )


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
