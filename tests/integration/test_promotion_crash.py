"""A promotion or rollback killed at each step, on SQLite and PostgreSQL, with both vector backends.

The steps (``tower_platform.registry.intents``): ``before_swap`` (intent committed, alias not moved), ``after_swap``
(alias moved, registry not committed), ``after_commit`` (everything done). After the kill:

- the next command reports it: ``models list`` / ``models show`` / ``embeddings status`` flag it in their table and
  ``--json`` and warn on stderr, and promote / rollback refuse with exit 4 naming ``towerctl models reconcile``;
- ``reconcile --dry-run`` says what it would do and writes nothing;
- ``reconcile`` repairs it, deciding by where the alias points (worked out per case in ``EXPECTED``), and the audit
  log tells the whole story.

The embedded qdrant-edge store keeps its aliases in files, so its runs are killed for real: a child process promotes
with a hook that sends itself SIGKILL at the step. qdrant-client's in-memory store (the server API) lives inside one
process, so there the hook raises a BaseException that no handler of the platform catches (``except TowerError``
everywhere, and no open transaction at any step): the process is left exactly as a kill would leave it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from registry_support import SharedVectors, cli_opens_vectors, database_rows, register_placeholder_version
from tower_platform.naming import collection_name
from tower_platform.registry.store import SqlRegistryStore
from tower_platform.settings import get_settings

runner = CliRunner()
POINTS = 3

# (action, step) -> (production after reconcile, reconcile step, the killed operation's own audit event survives)
# promote 1 -> 2 starts at production 1; rollback starts at production 2 (promote 1, promote 2) and returns to 1.
EXPECTED = {
    ("promote", "before_swap"): (1, ["abort_intent"]),  # the alias never moved: v1 still serves, the intent is dropped
    ("promote", "after_swap"): (2, ["complete_intent"]),  # the alias serves v2: the registry catches up
    ("promote", "after_commit"): (2, []),  # done before the kill: nothing to repair
    ("rollback", "before_swap"): (2, ["abort_intent"]),
    ("rollback", "after_swap"): (1, ["complete_intent"]),
    ("rollback", "after_commit"): (1, []),
}

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from tower_platform.registry.promotion import promote, rollback
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.edge import EdgeVectorStore

    url, root, action, step = sys.argv[1:5]

    def kill_at(name):
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    with SqlRegistryStore(url) as registry, EdgeVectorStore(root) as vectors:
        if action == "promote":
            promote(registry, vectors, "movies", 2, actor="alice", reason="launch v2", on_step=kill_at)
        else:
            rollback(registry, vectors, "movies", actor="bob", reason="v2 regressed", on_step=kill_at)
    sys.exit(7)  # only reached when the step never came
    """
)


class Killed(BaseException):
    """Raised by the in-process hook: escapes every handler of the platform, as SIGKILL would."""


@pytest.fixture
def home(tmp_path, monkeypatch, migrated_database_url):
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOWER_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    yield migrated_database_url
    get_settings.cache_clear()


def _deploy(url, vectors, exported_model, tmp_path, *, action: str) -> None:
    """v1 and v2 indexed; production 1 (for a promote of 2) or 2 after 1 (for a rollback to 1)."""
    from tower_platform.registry.promotion import promote

    with SqlRegistryStore(url) as registry:
        for version in (1, 2):
            register_placeholder_version(
                registry, artifacts=exported_model(tmp_path / "artifacts" / f"v{version}", seed=version)
            )
            name = collection_name("movies", version)
            vectors.create_collection(name, dimension=4)
            vectors.upsert(name, [f"i{k}" for k in range(POINTS)], np.eye(POINTS, 4), [{}] * POINTS)
            registry.record_collection("movies", version, name=name, point_count=POINTS, dimension=4,
                                       distance="cosine", verified=True)
            registry.mark_indexed("movies", version, actor="setup")
        promote(registry, vectors, "movies", 1, actor="setup")
        if action == "rollback":
            promote(registry, vectors, "movies", 2, actor="setup")


def _cli(*args: str, code: int = 0):
    from tower_platform.cli.main import app

    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    return result


def _check_detected_repaired_and_logged(url: str, action: str, step: str, alias_target) -> None:
    production_after, steps = EXPECTED[(action, step)]
    killed_midway = step != "after_commit"
    started_at = 1 if action == "promote" else 2
    with SqlRegistryStore(url) as registry:
        production_now = registry.production_version("movies").version
    # the kill happened where it should: the registry moved only once the commit went through
    assert production_now == (started_at if killed_midway else production_after)

    listed = _cli("models", "list", "movies", "--json")
    problems = [p for v in json.loads(listed.stdout) for p in v["problems"]]
    shown = json.loads(_cli("models", "show", "movies", "--json").stdout)["serving"]
    status = json.loads(_cli("embeddings", "status", "movies", "--json").stdout)["serving"]
    if not killed_midway:
        assert problems == [] and shown["ok"] and status["ok"] and "warning" not in listed.stderr
    else:
        kinds = {p["kind"] for p in shown["problems"]}
        # before the swap only the intent is pending; after it the alias has also left the registry's production
        assert kinds == ({"pending_intent"} if step == "before_swap" else {"pending_intent", "alias_drift"})
        assert shown["pending_intent"]["action"] == action and status["problems"] == shown["problems"]
        assert any("intent #" in p and "is pending" in p for p in problems)
        assert "warning: intent #" in listed.stderr and "towerctl models reconcile movies" in listed.stderr
        table = _cli("models", "list", "movies").stdout
        assert "intent pending" in table
        refused = _cli("models", "promote", "movies", "2", code=4) if action == "promote" else _cli(
            "models", "rollback", "movies", code=4)
        assert "run `towerctl models reconcile movies` first" in refused.stderr

    before = database_rows(url)
    planned = json.loads(_cli("models", "reconcile", "movies", "--dry-run", "--json").stdout)
    assert [s["action"] for s in planned["steps"]] == steps and planned["remaining"] == []
    assert database_rows(url) == before and alias_target() == alias_target()  # a dry run writes nothing

    done = json.loads(_cli("models", "reconcile", "movies", "--actor", "ops", "--reason", "after the crash",
                           "--json").stdout)
    assert [s["action"] for s in done["steps"]] == steps and done["remaining"] == []
    assert json.loads(_cli("models", "show", "movies", "--json").stdout)["serving"]["ok"]
    assert alias_target() == collection_name("movies", production_after)
    if not steps:
        assert database_rows(url) == before  # nothing to repair writes nothing

    with SqlRegistryStore(url) as registry:
        assert registry.production_version("movies").version == production_after
        events = [e for e in registry.audit_log("movies") if e.action in ("promote", "rollback", "reconcile")]
        with registry.reading("movies") as unit:
            intents = unit.intents()
    setup = [("promote", None, 1)] + ([("promote", 1, 2)] if action == "rollback" else [])
    operation = ("promote", 1, 2) if action == "promote" else ("rollback", 2, 1)
    story = [(e.action, e.from_version, e.to_version) for e in events]
    if step == "before_swap":  # the operation never happened: reconcile says it dropped the intent
        assert story == [*setup, ("reconcile", *operation[1:])]
    elif step == "after_swap":  # the operation's own event, written by reconcile, then reconcile's
        assert story == [*setup, operation, ("reconcile", *operation[1:])]
        completed = events[-2]
        assert completed.actor in ("alice", "bob") and completed.details["completed_by"] == "reconcile"
    else:
        assert story == [*setup, operation]
    if steps:
        assert (events[-1].actor, events[-1].reason) == ("ops", "after the crash")
        assert events[-1].details["decision"] == steps[0]
    assert all(i.state in ("completed", "aborted") for i in intents)
    killed = intents[-1]
    assert (killed.action, killed.from_version, killed.to_version) == operation
    assert killed.state == ("aborted" if step == "before_swap" else "completed")
    assert killed.resolved_by == ("ops" if steps else killed.actor)


@pytest.mark.slow
@pytest.mark.parametrize("step", ["before_swap", "after_swap", "after_commit"])
@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_sigkill_at_each_step_on_the_edge_store(home, exported_model, tmp_path, monkeypatch, action, step):
    from tower_platform.vectors.edge import EdgeVectorStore

    url, root = home, tmp_path / "vectors"
    with EdgeVectorStore(root) as vectors:
        _deploy(url, vectors, exported_model, tmp_path, action=action)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(root), action, step],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stderr[-3000:])
    cli_opens_vectors(monkeypatch, lambda: EdgeVectorStore(root))

    def alias_target():
        with EdgeVectorStore(root) as vectors:
            return vectors.alias_target("movies")

    _check_detected_repaired_and_logged(url, action, step, alias_target)


@pytest.mark.parametrize("step", ["before_swap", "after_swap", "after_commit"])
@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_a_stop_at_each_step_on_the_qdrant_client_server_path(home, exported_model, tmp_path, monkeypatch, action,
                                                                step):
    from tower_platform.registry.promotion import promote, rollback
    from tower_platform.vectors.store import QdrantVectorStore

    url, vectors = home, QdrantVectorStore.memory()
    _deploy(url, vectors, exported_model, tmp_path, action=action)

    def stop_at(name):
        if name == step:
            raise Killed(name)

    with SqlRegistryStore(url) as registry, pytest.raises(Killed):
        if action == "promote":
            promote(registry, vectors, "movies", 2, actor="alice", reason="launch v2", on_step=stop_at)
        else:
            rollback(registry, vectors, "movies", actor="bob", reason="v2 regressed", on_step=stop_at)
    cli_opens_vectors(monkeypatch, lambda: SharedVectors(vectors))
    _check_detected_repaired_and_logged(url, action, step, lambda: vectors.alias_target("movies"))
    vectors.close()
