"""``towerctl db`` and ``towerctl models`` through CliRunner: exit codes, stdout, stderr, audit fields."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from tower_platform.cli.main import app
from tower_platform.settings import Settings, get_settings

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TOWER_HOME", str(home))
    monkeypatch.delenv("TOWER_DATABASE_URL", raising=False)
    monkeypatch.delenv("TOWER_QDRANT__URL", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def _run(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def _one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _index(version: int) -> None:
    """What `towerctl embeddings write` does: a collection in the deployment's vector store, recorded and verified."""
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.store import open_vector_store

    settings = Settings()
    name = f"movies__v{version}"
    with open_vector_store(settings) as vectors:
        vectors.create_collection(name, dimension=4)
        vectors.upsert(name, ["a", "b"], np.eye(2, 4), [{}, {}])
    with SqlRegistryStore(settings.registry_url) as registry:
        registry.record_collection("movies", version, name=name, point_count=2, dimension=4, distance="cosine",
                                   verified=True)
        registry.mark_indexed("movies", version, actor="writer")


def test_db_upgrade_and_current(home):
    error = _one_line_error(_run("db", "current", code=6))
    assert "does not exist yet; run `towerctl db upgrade`" in error
    upgraded = json.loads(_run("db", "upgrade", "--json").stdout)
    assert upgraded["current"] == [upgraded["head"]] and upgraded["before"] == [] and upgraded["at_head"]
    current = json.loads(_run("db", "current", "--json").stdout)
    assert current["at_head"] and current["database"].endswith("registry.db")
    _run("db", "upgrade")  # safe to re-run
    assert "add --yes" in _one_line_error(_run("db", "downgrade", "base", code=2))
    assert json.loads(_run("db", "downgrade", "base", "--yes", "--json").stdout)["current"] == []
    assert "has no Tower Platform schema" in _one_line_error(_run("models", "list", code=6))


def test_register_creates_the_default_schema_and_records_the_export(home, exported_model, tmp_path):
    export = tmp_path / "export"
    exported_model(export, seed=1, spec_extra={"estimator_path": "estimator.npz"})
    (export / "estimator.npz").write_bytes(b"state")
    result = _run("models", "register", str(export), "--model", "movies", "--actor", "alice", "--reason", "r1", "--json")
    assert "created the registry schema" in result.stderr
    created = json.loads(result.stdout)
    assert (created["model"], created["version"], created["status"], created["created_by"]) == (
        "movies", 1, "registered", "alice"
    )
    assert created["estimator_path"] == str(export / "estimator.npz")
    assert created["artifacts"]["spec.json"]["path"] == str(export / "spec.json")
    assert created["window_start"].startswith("2018-01-01T00:00:00")
    shown = json.loads(_run("models", "show", "movies", "--json").stdout)
    assert shown["metrics"] == {"recall@100": 0.26} and shown["feature_service"] == "movies_fs"
    models = json.loads(_run("models", "list", "--json").stdout)
    assert [(m["name"], m["latest_version"], m["production_version"]) for m in models] == [("movies", 1, None)]
    history = json.loads(_run("models", "history", "movies", "--json").stdout)
    assert [(e["action"], e["actor"], e["reason"]) for e in history] == [("register", "alice", "r1")]
    table = _run("models", "list", "movies").stdout
    assert "registered" in table and "movies" in table


def test_register_takes_the_version_named_by_the_export(home, exported_model, tmp_path):
    exported_model(tmp_path / "v4", version=4)
    assert json.loads(_run("models", "register", str(tmp_path / "v4"), "--json").stdout)["version"] == 4
    error = _one_line_error(_run("models", "register", str(tmp_path / "v4"), code=4))
    assert "already has a version 4" in error


def test_register_refuses_tampered_or_inconsistent_exports_and_writes_nothing(home, exported_model, tmp_path):
    _run("db", "upgrade")
    tampered = tmp_path / "tampered"
    artifacts = exported_model(tampered, spec_extra={"sha256": {"query.onnx": "0" * 64}})
    assert Path(artifacts["query.onnx"][0]).exists()
    error = _one_line_error(_run("models", "register", str(tampered), code=4))
    assert "query.onnx" in error and "sha256" in error
    exported_model(tmp_path / "other", model="books")
    error = _one_line_error(_run("models", "register", str(tmp_path / "other"), "--model", "movies", code=2))
    assert "model 'books'" in error and "--model says 'movies'" in error
    (tmp_path / "empty").mkdir()
    assert "lacks query.onnx, item.onnx, spec.json" in _one_line_error(
        _run("models", "register", str(tmp_path / "empty"), code=2)
    )
    assert json.loads(_run("models", "list", "--json").stdout) == []


def test_unknown_model_or_version_exits_3(home, exported_model, tmp_path):
    _run("db", "upgrade")
    error = _one_line_error(_run("models", "show", "ghost", code=3))
    assert error == "error: Model 'ghost' is not registered; see `towerctl models list`."
    exported_model(tmp_path / "v1")
    _run("models", "register", str(tmp_path / "v1"))
    error = _one_line_error(_run("models", "show", "movies", "--version", "7", code=3))
    assert error == "error: Model 'movies' has no version 7; see `towerctl models list movies`."
    _one_line_error(_run("models", "history", "ghost", code=3))


def test_promote_unindexed_and_rollback_without_previous_exit_4_and_change_nothing(home, exported_model, tmp_path):
    exported_model(tmp_path / "v1")
    _run("models", "register", str(tmp_path / "v1"))
    error = _one_line_error(_run("models", "promote", "movies", "1", code=4))
    assert "version 1 has no verified collection" in error and "towerctl embeddings write" in error
    error = _one_line_error(_run("models", "rollback", "movies", code=4))
    assert error.startswith("error: Model 'movies' has no previous production version to roll back to")
    history = json.loads(_run("models", "history", "movies", "--json").stdout)
    assert [e["action"] for e in history] == ["register"]


def test_promote_rollback_and_gc_move_the_qdrant_alias(home, exported_model, tmp_path):
    from tower_platform.vectors.store import open_vector_store

    for version in (1, 2, 3):
        exported_model(Settings().artifacts_dir / "movies" / f"v{version}", seed=version)
        _run("models", "register", str(Settings().artifacts_dir / "movies" / f"v{version}"))
        _index(version)
    dry = json.loads(_run("models", "promote", "movies", "1", "--dry-run", "--json").stdout)
    assert dry["dry_run"] and dry["collection"] == "movies__v1"
    _run("models", "promote", "movies", "1", "--actor", "ops", "--reason", "launch")
    promoted = json.loads(_run("models", "promote", "movies", "2", "--json").stdout)
    assert (promoted["version"], promoted["previous_version"], promoted["changed"]) == (2, 1, True)
    rolled = json.loads(_run("models", "rollback", "movies", "--reason", "regression", "--json").stdout)
    assert (rolled["version"], rolled["previous_version"]) == (1, 2)
    with open_vector_store(Settings()) as vectors:
        assert vectors.alias_target("movies") == "movies__v1"
    planned = json.loads(_run("models", "gc", "movies", "--keep", "0", "--dry-run", "--json").stdout)
    assert [r["version"] for r in planned["retired"]] == [2, 3]  # v1 is production; v2 is rolled back
    _run("models", "gc", "movies", "--keep", "0")
    assert sorted(p.name for p in (Settings().artifacts_dir / "movies").iterdir()) == ["v1"]
    history = json.loads(_run("models", "history", "movies", "--json").stdout)
    changes = [(e["action"], e["from_version"], e["to_version"], e["reason"]) for e in history
               if e["action"] in ("promote", "rollback")]
    assert changes == [("promote", None, 1, "launch"), ("promote", 1, 2, None), ("rollback", 2, 1, "regression")]
    assert history[[e["action"] for e in history].index("promote")]["actor"] == "ops"


def test_unreachable_database_exits_5_with_one_sentence(home, monkeypatch):
    monkeypatch.setenv("TOWER_DATABASE_URL", "postgresql://tower:hunter2@127.0.0.1:9/registry")
    get_settings.cache_clear()
    error = _one_line_error(_run("models", "list", code=5))
    assert error == (
        "error: Cannot reach the registry database at postgresql://tower:***@127.0.0.1:9/registry; "
        "start it or fix TOWER_DATABASE_URL."
    )


def test_an_outdated_schema_is_refused_even_by_writing_commands(home, exported_model, tmp_path):
    _run("db", "upgrade")
    engine = create_engine(Settings().registry_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    engine.dispose()
    exported_model(tmp_path / "v1")
    for args in (("models", "list"), ("models", "register", str(tmp_path / "v1"))):
        assert "run `towerctl db upgrade`" in _one_line_error(_run(*args, code=6))


def test_an_explicit_database_url_is_never_migrated_implicitly(home, monkeypatch, exported_model, tmp_path):
    monkeypatch.setenv("TOWER_DATABASE_URL", f"sqlite:///{tmp_path / 'explicit.db'}")
    get_settings.cache_clear()
    exported_model(tmp_path / "v1")
    assert "towerctl db upgrade" in _one_line_error(_run("models", "register", str(tmp_path / "v1"), code=6))
    assert not (tmp_path / "explicit.db").exists()
