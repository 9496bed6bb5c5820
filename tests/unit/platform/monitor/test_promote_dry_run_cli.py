"""`towerctl models promote --dry-run` judges the alignment gate exactly as the real run does and writes nothing.

The world (monitor_world.py): v1 healthy and production, v2 with category C collapsed (it breaches), on the embedded
qdrant-edge store, on SQLite and PostgreSQL. Every table's rows are compared before and after each dry run.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from monitor_world import add_version
from registry_support import cli_opens_vectors, database_rows
from tower_platform.cli.main import app
from tower_platform.cli.output import out_console
from tower_platform.settings import get_settings

runner = CliRunner()


def _run(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


@pytest.fixture
def deployment(tmp_path, monkeypatch, migrated_database_url, world):
    from tower_platform.registry.promotion import promote
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.edge import EdgeVectorStore

    root = tmp_path / "vectors"
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOWER_DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("TOWER_MONITOR_CONFIG", str(tmp_path / "monitor.yaml"))
    (tmp_path / "monitor.yaml").write_text("monitor:\n  k: 10\n  min_items: 20\n  min_queries: 5\n")
    monkeypatch.setattr(out_console, "width", 250)
    get_settings.cache_clear()
    with SqlRegistryStore(migrated_database_url) as registry, EdgeVectorStore(root) as vectors:
        add_version(registry, vectors, world, tmp_path / "artifacts", collapsed=False)
        add_version(registry, vectors, world, tmp_path / "artifacts", collapsed=True)
        promote(registry, vectors, "movies", 1, actor="ops")
    cli_opens_vectors(monkeypatch, lambda: EdgeVectorStore(root))
    yield migrated_database_url, root
    get_settings.cache_clear()


def _alias(root) -> str | None:
    from tower_platform.vectors.edge import EdgeVectorStore

    with EdgeVectorStore(root) as vectors:
        return vectors.alias_target("movies")


def test_a_dry_run_reports_the_gate_of_the_real_run_and_writes_nothing(deployment):
    url, root = deployment
    before = database_rows(url)
    assert before["alignment_reports"] == [] and before["promotion_intents"] != []  # v1's promotion left its intent

    refused = _run("models", "promote", "movies", "2", "--dry-run", code=10)  # the real run refuses with 10 too
    assert "category 'C'" in refused.stderr and "--force --reason" in refused.stderr
    assert "breaches" in refused.stdout  # the report the real run would judge, printed
    assert database_rows(url) == before and _alias(root) == "movies__v1"

    planned = json.loads(_run("models", "promote", "movies", "2", "--dry-run", "--force", "--reason", "known",
                              "--json").stdout)
    assert planned["dry_run"] and planned["forced"] and (planned["version"], planned["previous_version"]) == (2, 1)
    assert planned["event"] is None and planned["verdict"]["details"]["report_run"] is None  # no report stored
    assert database_rows(url) == before and _alias(root) == "movies__v1"

    done = json.loads(_run("models", "promote", "movies", "2", "--force", "--reason", "known", "--json").stdout)
    assert done["verdict"]["breaches"] == planned["verdict"]["breaches"]  # the dry run judged what the run judged
    assert (done["version"], done["previous_version"], done["forced"]) == (2, 1, True) and not done["dry_run"]
    after = database_rows(url)
    assert len(after["alignment_reports"]) == 1 and len(after["audit_log"]) == len(before["audit_log"]) + 2
    assert _alias(root) == "movies__v2"  # (one alignment event, one promote event)


def test_a_dry_run_refuses_what_the_real_run_refuses(deployment):
    url, root = deployment
    _run("models", "rollback", "movies", "--dry-run", code=4)  # nothing to roll back to: v1 is the first production
    from tower_platform.vectors.edge import EdgeVectorStore

    with EdgeVectorStore(root) as vectors:  # a hand edit: the alias leaves the registry's production version
        vectors.swap_alias("movies", "movies__v2", previous="movies__v1")
    before = database_rows(url)
    for args in (("models", "promote", "movies", "2", "--dry-run"), ("models", "gc", "movies", "--dry-run")):
        assert "run `towerctl models reconcile movies` first" in _run(*args, code=4).stderr
    planned = json.loads(_run("models", "reconcile", "movies", "--dry-run", "--json").stdout)
    assert [s["action"] for s in planned["steps"]] == ["realign_alias"] and planned["remaining"] == []
    assert database_rows(url) == before and _alias(root) == "movies__v2"
