"""8 processes x 25 random promote / rollback / re-index operations on one model (PostgreSQL + the embedded engine).

Versions 1-4 are indexed with verified collections; version 5 is registered only (its collection exists in Qdrant but
was never verified), so promoting it must always be refused. Processes open the embedded vector store
(``EdgeVectorStore``: alias pointer files swapped under a file lock, shards locked by their opener) per call, except
while they hold the model's promotion lock: then once, from the first vector call to the end of the lock, so that what
decides an operation is serialised by the promotion lock alone. Each process records every alias target it observes
and every alias swap it makes. Afterwards:

- the Qdrant alias points to the registry's production version;
- the audit log holds exactly one promote/rollback event per successful operation, and the events form one chain
  (each starts from the version the previous one ended at), each having seen the alias where the registry said;
- no observed or swapped-to alias target was ever a version that was not indexed (version 5);
- every failure was a ConflictError (refused, not broken).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tower_platform.naming import collection_name
from tower_platform.registry.migration import upgrade_schema
from tower_platform.registry.promotion import promote
from tower_platform.registry.store import SqlRegistryStore
from tower_platform.vectors.edge import EdgeVectorStore
from registry_support import register_placeholder_version

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROCESSES = 8
OPERATIONS = 25
INDEXED = (1, 2, 3, 4)
UNINDEXED = 5

WORKER = textwrap.dedent(
    """
    import contextlib, functools, json, random, sys
    from tower_platform.errors import TowerError
    from tower_platform.registry.promotion import promote, rollback
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.edge import EdgeVectorStore

    url, vectors_path, seed, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    log = open(out, "a", buffering=1)

    def record(**entry):
        log.write(json.dumps(entry) + "\\n")

    class PerCallVectors:
        # Opens the vector store per call (shard locks held only for that call), or, inside the promotion lock, once from
        # the first call to the end of the lock (see LockScopedStore); records every alias target seen and swap made.
        def __init__(self):
            self.held = None
            self.hold_on_first_call = False

        def _call(self, method, *args, **kwargs):
            if self.hold_on_first_call and self.held is None:
                self.held = EdgeVectorStore(vectors_path, lock_timeout_s=60)
            if self.held is not None:
                return getattr(self.held, method)(*args, **kwargs)
            with EdgeVectorStore(vectors_path, lock_timeout_s=60) as store:
                return getattr(store, method)(*args, **kwargs)

        @contextlib.contextmanager
        def held_from_first_call(self):
            self.hold_on_first_call = True
            try:
                yield
            finally:
                self.hold_on_first_call = False
                if self.held is not None:
                    self.held.close()
                    self.held = None

        def alias_target(self, alias):
            target = self._call("alias_target", alias)
            record(kind="observed", target=target)
            return target

        def swap_alias(self, alias, collection, *, previous):
            self._call("swap_alias", alias, collection, previous=previous)
            record(kind="swap", to=collection, previous=previous)

        def delete_alias(self, alias):
            self._call("delete_alias", alias)
            record(kind="swap", to=None, previous=None)

        # Collections never change during this test: their facts are read once per process (fewer opens).
        @functools.lru_cache(maxsize=None)
        def collection_exists(self, name):
            return self._call("collection_exists", name)

        @functools.lru_cache(maxsize=None)
        def collection_info(self, name):
            return self._call("collection_info", name)

        def delete_collection(self, name):
            raise AssertionError("no gc in this test")

    class LockScopedStore:
        # The registry; inside its promotion lock, the vector store stays open from the first vector call on. The
        # registry reads and vector calls that decide an operation all happen under that lock, which alone serialises
        # them; a shard lock is always taken after the promotion lock, never while waiting for it (no deadlock).
        def __init__(self, store, vectors):
            self._store, self._vectors = store, vectors

        def __getattr__(self, name):
            return getattr(self._store, name)

        @contextlib.contextmanager
        def promotion_lock(self, name):
            with self._store.promotion_lock(name), self._vectors.held_from_first_call():
                yield

    rng = random.Random(seed)
    vectors = PerCallVectors()
    with SqlRegistryStore(url) as registry:
        store = LockScopedStore(registry, vectors)
        for step in range(int(sys.argv[5])):
            roll = rng.random()
            try:
                if roll < 0.5:
                    version = rng.randint(1, 5)
                    result = promote(store, vectors, "movies", version, actor=f"p{seed}", reason=f"step {step}")
                    record(kind="op", op="promote", version=version, ok=True, changed=result.changed)
                elif roll < 0.8:
                    result = rollback(store, vectors, "movies", actor=f"p{seed}", reason=f"step {step}")
                    record(kind="op", op="rollback", version=result.version, ok=True, changed=True)
                else:
                    version = rng.randint(1, 4)
                    registry.mark_indexed("movies", version, actor=f"p{seed}", reason="re-verified")
                    record(kind="op", op="index", version=version, ok=True, changed=None)
            except TowerError as exc:
                record(kind="op", op="error", ok=False, error=type(exc).__name__, message=exc.message)
    """
)


@pytest.fixture
def deployment(fresh_postgres_url, exported_model, tmp_path):
    upgrade_schema(fresh_postgres_url)
    vectors_path = tmp_path / "vectors"
    with SqlRegistryStore(fresh_postgres_url) as store, EdgeVectorStore(vectors_path) as vectors:
        for version in (*INDEXED, UNINDEXED):
            register_placeholder_version(
                store, artifacts=exported_model(tmp_path / "artifacts" / f"v{version}", seed=version), actor="setup"
            )
            name = collection_name("movies", version)
            vectors.create_collection(name, dimension=4)
            vectors.upsert(name, ["a", "b"], np.eye(2, 4), [{}, {}])
            store.record_collection(
                "movies", version, name=name, point_count=2, dimension=4, distance="cosine",
                verified=version != UNINDEXED,
            )
            if version != UNINDEXED:
                store.mark_indexed("movies", version, actor="setup")
        promote(store, vectors, "movies", 1, actor="setup")
    return fresh_postgres_url, vectors_path


def test_concurrent_promotions_and_rollbacks_keep_registry_and_alias_in_step(deployment, tmp_path):
    url, vectors_path = deployment
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = [tmp_path / f"worker{k}.jsonl" for k in range(PROCESSES)]
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(vectors_path), str(k), str(log), str(OPERATIONS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for k, log in enumerate(logs)
    ]
    for process in processes:
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, output.decode(errors="replace")[-3000:]

    entries = [json.loads(line) for log in logs for line in log.read_text().splitlines()]
    ops = [e for e in entries if e["kind"] == "op"]
    assert len(ops) == PROCESSES * OPERATIONS
    errors = [e for e in ops if not e["ok"]]
    assert {e["error"] for e in errors} <= {"ConflictError"}, errors[:5]
    changes = [e for e in ops if e["ok"] and e["op"] in ("promote", "rollback") and e["changed"]]
    assert changes, "no operation succeeded: the test exercised nothing"
    print(f"{len(changes)} alias changes, {len(errors)} refusals, {len(ops) - len(changes) - len(errors)} other")

    allowed = {collection_name("movies", v) for v in INDEXED}
    observed = {e["target"] for e in entries if e["kind"] == "observed"}
    swapped = {e["to"] for e in entries if e["kind"] == "swap"}
    assert observed <= allowed and swapped <= allowed, (observed, swapped)

    with SqlRegistryStore(url) as store, EdgeVectorStore(vectors_path) as vectors:
        production = store.production_version("movies")
        assert vectors.alias_target("movies") == collection_name("movies", production.version)
        events = [e for e in store.audit_log("movies") if e.action in ("promote", "rollback")]
        statuses = {v.version: v.status for v in store.list_versions("movies")}
    assert statuses[UNINDEXED] == "registered"
    assert [v for v, s in statuses.items() if s == "production"] == [production.version]
    setup, *concurrent = events
    assert len(concurrent) == len(changes)
    current = setup.to_version
    for event in concurrent:  # one chain: every change starts where the previous one ended
        assert event.from_version == current, event
        assert event.details["alias_before"] == collection_name("movies", current) and not event.details["alias_drift"]
        current = event.to_version
    assert current == production.version
