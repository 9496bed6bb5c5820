"""The promotion lock: one promotion, rollback, reconcile or gc of a model at a time, released when its process dies.

A promotion spans several registry transactions and a vector-store call between them (intent committed, alias moved,
intent completed), so the model-row lock of one transaction cannot serialise it. This lock is held around the whole
operation instead, and it is one the operating system or the database drops when the holder dies, so a pending intent
seen by a lock holder is always one whose process is gone:

- PostgreSQL: a session advisory lock, ``pg_advisory_lock(NAMESPACE, crc32(model))``, on a connection kept for the
  block (the server releases it when the connection ends); the server queues the waiters, ``lock_timeout`` bounds
  the wait;
- SQLite: an exclusive ``flock`` on ``<database file>.promotion-lock`` (one lock per database: SQLite serialises its
  writers anyway), polled with a growing pause (:data:`POLL_S` up to :data:`MAX_POLL_S`); in-memory SQLite: a lock of
  this process.

After ``timeout_s`` the wait gives up with :class:`ConflictError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, func, select, text
from sqlalchemy import exc as sa_exc

from tower_platform.errors import ConflictError
from tower_platform.registry.database import sqlite_file, translate_db_error

NAMESPACE = 0x546F7772  # "Towr": the first key of the two-key advisory lock, so other users of advisory locks keep theirs
LOCK_SUFFIX = ".promotion-lock"
POLL_S = 0.01
MAX_POLL_S = 0.2
DEFAULT_TIMEOUT_S = 120.0
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL: lock_timeout expired

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


def model_key(model: str) -> int:
    """The second advisory-lock key of a model: crc32 of its name as a signed 32-bit integer."""
    value = zlib.crc32(model.encode("utf-8"))
    return value - (1 << 32) if value >= (1 << 31) else value


@contextlib.contextmanager
def promotion_lock(engine: Engine, *, url: str, model: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold the promotion lock of ``model`` for the block."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, url=url, model=model, timeout_s=timeout_s):
            yield
        return
    file = sqlite_file(url)
    if file is None:
        with _process_lock(url, model=model, timeout_s=timeout_s):
            yield
        return
    with _file_lock(Path(f"{file}{LOCK_SUFFIX}"), model=model, timeout_s=timeout_s):
        yield


def _busy(model: str, timeout_s: float) -> ConflictError:
    return ConflictError(
        f"Another promotion, rollback, reconcile or gc of model '{model}' held its promotion lock for more than "
        f"{timeout_s:g} s; wait for it to finish and run the command again."
    )


def _wait(try_once, *, model: str, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    pause = POLL_S
    while not try_once():
        if time.monotonic() >= deadline:
            raise _busy(model, timeout_s)
        time.sleep(pause)
        pause = min(pause * 2, MAX_POLL_S)


@contextlib.contextmanager
def _advisory_lock(engine: Engine, *, url: str, model: str, timeout_s: float) -> Iterator[None]:
    key = model_key(model)
    try:
        connection = engine.connect()
    except sa_exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, url=url) from exc
    try:
        try:
            connection.execute(text(f"SET LOCAL lock_timeout = '{max(1, int(timeout_s * 1000))}ms'"))
            connection.execute(select(func.pg_advisory_lock(NAMESPACE, key)))
            connection.commit()  # the lock is the session's: no transaction stays open while the block runs
        except sa_exc.SQLAlchemyError as exc:
            with contextlib.suppress(sa_exc.SQLAlchemyError):
                connection.rollback()
            if getattr(getattr(exc, "orig", None), "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                raise _busy(model, timeout_s) from exc
            raise translate_db_error(exc, url=url) from exc
        try:
            yield
        finally:
            try:
                connection.scalar(select(func.pg_advisory_unlock(NAMESPACE, key)))
                connection.commit()
            except sa_exc.SQLAlchemyError:
                connection.invalidate()  # a lost connection has lost its lock with it
    finally:
        connection.close()


@contextlib.contextmanager
def _file_lock(path: Path, *, model: str, timeout_s: float) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        def try_once() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        _wait(try_once, model=model, timeout_s=timeout_s)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _process_lock(url: str, *, model: str, timeout_s: float) -> Iterator[None]:
    with _process_locks_guard:
        lock = _process_locks.setdefault(f"{url}#{model}", threading.Lock())
    if not lock.acquire(timeout=timeout_s):
        raise _busy(model, timeout_s)
    try:
        yield
    finally:
        lock.release()
