"""The promotion lock: one holder per model at a time, a clear refusal after the timeout, freed by a killed holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tower_platform.errors import ConflictError
from tower_platform.registry.store import SqlRegistryStore


def test_a_second_holder_waits_for_the_first_and_gives_up_after_its_timeout(migrated_database_url):
    with SqlRegistryStore(migrated_database_url) as first, SqlRegistryStore(migrated_database_url) as second:
        with first.promotion_lock("movies"):
            started = time.monotonic()
            with pytest.raises(ConflictError, match="held its promotion lock for more than 0.3 s; wait for it"):
                with second.promotion_lock("movies", timeout_s=0.3):
                    pass
            assert time.monotonic() - started >= 0.3  # it waited before giving up
        order: list[str] = []
        with first.promotion_lock("movies"):
            waiter = threading.Thread(target=lambda: _hold(second, order))
            waiter.start()
            time.sleep(0.3)
            order.append("first done")
        waiter.join(timeout=10)
        assert order == ["first done", "second in"]  # the second got in only once the first let go


def _hold(store: SqlRegistryStore, order: list[str]) -> None:
    with store.promotion_lock("movies", timeout_s=10):
        order.append("second in")


HOLDER = textwrap.dedent(
    """
    import os, signal, sys
    from tower_platform.registry.store import SqlRegistryStore
    with SqlRegistryStore(sys.argv[1]) as store, store.promotion_lock("movies"):
        print("held", flush=True)
        sys.stdin.readline()  # wait for the test to kill us
    """
)


def test_a_killed_holder_frees_the_lock(migrated_database_url):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, migrated_database_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with SqlRegistryStore(migrated_database_url) as store:
            with pytest.raises(ConflictError):
                with store.promotion_lock("movies", timeout_s=0.2):
                    pass
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=30)
            with store.promotion_lock("movies", timeout_s=10):  # the database or the kernel released it
                pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
