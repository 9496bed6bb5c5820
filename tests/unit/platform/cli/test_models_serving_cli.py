"""`towerctl models list|show|reconcile|register --dry-run` against a registry that disagrees with its vector store.

Both vector backends (the embedded qdrant-edge store and qdrant-client's server API in memory) and both databases.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from registry_support import SharedVectors, cli_opens_vectors, database_rows, register_placeholder_version
from tower_platform.cli.main import app
from tower_platform.cli.output import out_console
from tower_platform.naming import collection_name
from tower_platform.registry.store import SqlRegistryStore
from tower_platform.settings import get_settings

runner = CliRunner()
POINTS = 3


def _run(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    return result


def _write_collection(vectors, version: int) -> str:
    name = collection_name("movies", version)
    vectors.create_collection(name, dimension=4)
    vectors.upsert(name, [f"i{k}" for k in range(POINTS)], np.eye(POINTS, 4), [{}] * POINTS)
    return name


@pytest.fixture(params=["edge", "memory"])
def deployment(request, tmp_path, monkeypatch, migrated_database_url, exported_model):
    """v1 production and v2 indexed, each with its collection, on each vector backend: (url, open_store, backend)."""
    yield from _deployment(request.param, tmp_path, monkeypatch, migrated_database_url, exported_model)


@pytest.fixture
def edge_deployment(tmp_path, monkeypatch, migrated_database_url, exported_model):
    """The same on the embedded store only (what the test checks does not depend on the backend)."""
    yield from _deployment("edge", tmp_path, monkeypatch, migrated_database_url, exported_model)


def _deployment(backend, tmp_path, monkeypatch, migrated_database_url, exported_model):
    from tower_platform.registry.promotion import promote
    from tower_platform.vectors.edge import EdgeVectorStore
    from tower_platform.vectors.store import QdrantVectorStore

    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOWER_DATABASE_URL", migrated_database_url)
    monkeypatch.setattr(out_console, "width", 250)
    get_settings.cache_clear()
    if backend == "edge":
        def open_store():
            return EdgeVectorStore(tmp_path / "vectors")
    else:
        shared = SharedVectors(QdrantVectorStore.memory())

        def open_store():
            return shared
    with SqlRegistryStore(migrated_database_url, home_dir=tmp_path / "home") as registry, open_store() as vectors:
        for version in (1, 2):
            register_placeholder_version(registry, artifacts=exported_model(tmp_path / "artifacts" / f"v{version}",
                                                                            seed=version))
            name = _write_collection(vectors, version)
            registry.record_collection("movies", version, name=name, point_count=POINTS, dimension=4,
                                       distance="cosine", verified=True)
            registry.mark_indexed("movies", version, actor="setup")
        promote(registry, vectors, "movies", 1, actor="setup")
    cli_opens_vectors(monkeypatch, open_store)
    yield migrated_database_url, open_store, backend
    get_settings.cache_clear()


def test_a_deleted_production_collection_is_flagged_refused_and_repaired_once_rewritten(deployment):
    url, open_store, _backend = deployment
    healthy = _run("models", "list", "movies").stdout
    assert "production" in healthy and "problems" in healthy and "warning" not in _run("models", "list").stderr
    with open_store() as vectors:
        vectors.delete_collection("movies__v1")  # both backends drop the alias with it

    table = _run("models", "list", "movies")
    row = next(line for line in table.stdout.splitlines() if "movies__v1" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[1] == "production" and cells[4] == "missing" and "collection missing" in cells[7]
    assert "does not exist in the vector store" in table.stderr and "towerctl embeddings write movies" in table.stderr
    listed = json.loads(_run("models", "list", "movies", "--json").stdout)
    assert (listed[0]["status"], listed[0]["in_vector_store"], listed[0]["alias"]) == ("production", False, False)
    models = json.loads(_run("models", "list", "--json").stdout)
    assert {p["kind"] for p in models[0]["serving"]["problems"]} == {"missing_collection", "alias_drift"}
    assert "collection missing" in _run("models", "list").stdout

    before = database_rows(url)
    cannot = _run("models", "reconcile", "movies", code=4)
    assert "nothing reconcile itself can repair" in cannot.stdout
    assert "towerctl embeddings write movies --version 1" in cannot.stderr
    assert database_rows(url) == before  # nothing it could do, nothing written
    assert "towerctl models reconcile movies" in _run("models", "gc", "movies", "--keep", "0", code=4).stderr

    with open_store() as vectors:  # what `towerctl embeddings write movies --version 1` does: the same collection
        _write_collection(vectors, 1)
    fixed = json.loads(_run("models", "reconcile", "movies", "--actor", "ops", "--json").stdout)
    assert [s["action"] for s in fixed["steps"]] == ["realign_alias"] and fixed["remaining"] == []
    assert json.loads(_run("models", "show", "movies", "--json").stdout)["serving"]["ok"]
    with open_store() as vectors:
        assert vectors.alias_target("movies") == "movies__v1"
    with SqlRegistryStore(url) as registry:
        event = registry.audit_log("movies")[-1]
    assert (event.action, event.actor, event.details["collection"], event.details["alias_before"]) == (
        "reconcile", "ops", "movies__v1", None)


def test_a_lost_production_can_be_replaced_by_promoting_a_version_that_exists(deployment):
    url, open_store, _backend = deployment
    with open_store() as vectors:
        vectors.delete_collection("movies__v1")
    assert "collection missing" in _run("models", "list").stdout
    again = _run("models", "promote", "movies", "1", code=4)  # production already, but nothing serves it
    assert "version 1 is production but its collection 'movies__v1' does not exist" in again.stderr
    promoted = json.loads(_run("models", "promote", "movies", "2", "--json").stdout)
    assert (promoted["version"], promoted["previous_version"]) == (2, 1)
    assert json.loads(_run("models", "show", "movies", "--json").stdout)["serving"]["ok"]
    assert "towerctl embeddings write movies --version 1" in _run("models", "promote", "movies", "1", code=4).stderr


def test_a_dangling_alias_pointer_is_a_missing_collection_and_reconcile_moves_it_back(edge_deployment, tmp_path):
    # only a pointer file can outlive its collection: qdrant-client drops an alias with its collection
    url, open_store, _backend = edge_deployment
    with open_store() as vectors:
        vectors.swap_alias("movies", "movies__v2", previous="movies__v1")
    shutil.rmtree(tmp_path / "vectors" / "movies__v2")  # removed by hand: the pointer stays
    shown = json.loads(_run("models", "show", "movies", "--json").stdout)["serving"]
    messages = [p["message"] for p in shown["problems"]]
    assert any("points to 'movies__v2', which does not exist" in m for m in messages), messages
    assert "run `towerctl models reconcile movies` first" in _run("models", "promote", "movies", "1", code=4).stderr
    fixed = json.loads(_run("models", "reconcile", "movies", "--json").stdout)
    assert [s["action"] for s in fixed["steps"]] == ["realign_alias"] and fixed["remaining"] == []
    with open_store() as vectors:
        assert vectors.alias_target("movies") == "movies__v1"


def test_an_alias_without_a_production_version_is_removed(deployment):
    url, open_store, _backend = deployment
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:  # as if the registry had lost its production row
        connection.execute(text("DELETE FROM aliases"))
    engine.dispose()
    listed = _run("models", "list", "movies")
    assert "the registry has no production version" in listed.stderr
    fixed = json.loads(_run("models", "reconcile", "movies", "--json").stdout)
    assert [s["action"] for s in fixed["steps"]] == ["remove_alias"]
    with open_store() as vectors:
        assert vectors.alias_target("movies") is None


def test_a_reconcile_stopped_in_its_own_realignment_is_finished_by_the_next(deployment):
    from tower_platform.registry.reconcile import reconcile

    url, open_store, _backend = deployment
    with open_store() as vectors:
        vectors.swap_alias("movies", "movies__v2", previous="movies__v1")

    class Stopped(BaseException):
        pass

    def stop(step):
        if step == "after_swap":
            raise Stopped

    with SqlRegistryStore(url) as registry, open_store() as vectors, pytest.raises(Stopped):
        reconcile(registry, vectors, "movies", actor="ops", on_step=stop)
    shown = json.loads(_run("models", "show", "movies", "--json").stdout)["serving"]
    assert shown["pending_intent"]["action"] == "realign" and shown["alias_target"] == "movies__v1"
    fixed = json.loads(_run("models", "reconcile", "movies", "--json").stdout)
    assert [s["action"] for s in fixed["steps"]] == ["complete_intent"] and fixed["remaining"] == []
    with SqlRegistryStore(url) as registry:
        events = [e for e in registry.audit_log("movies") if e.action == "reconcile"]
    # the realignment's own event (written when the next reconcile completed it), then that reconcile's
    assert [e.details.get("decision") for e in events] == ["realign_alias", "complete_intent"]


def test_register_dry_run_finds_the_conflict_the_real_run_finds_and_writes_nothing(edge_deployment, exported_model,
                                                                                    tmp_path):
    url, _open_store, _backend = edge_deployment
    export = tmp_path / "v2-again"
    exported_model(export, version=2)  # names version 2, which exists
    before = database_rows(url)
    dry = _run("models", "register", str(export), "--dry-run", code=4)
    real = _run("models", "register", str(export), code=4)
    assert dry.stderr == real.stderr and "already has a version 2" in dry.stderr
    fresh = tmp_path / "fresh"
    exported_model(fresh, seed=9)
    planned = json.loads(_run("models", "register", str(fresh), "--dry-run", "--json").stdout)
    assert (planned["version"], planned["status"], planned["dry_run"], planned["creates_schema"]) == (
        3, "registered", True, False)
    tampered = tmp_path / "tampered"
    exported_model(tampered, spec_extra={"sha256": {"query.onnx": "0" * 64}})
    dry, real = (_run("models", "register", str(tampered), *flag, code=4) for flag in (("--dry-run",), ()))
    assert dry.stderr == real.stderr and "sha256" in dry.stderr
    assert database_rows(url) == before


def test_models_show_is_laid_out_without_python_reprs_and_its_json_is_the_record(edge_deployment, exported_model,
                                                                                 tmp_path):
    url, _open_store, _backend = edge_deployment
    export = tmp_path / "v3"
    exported_model(export, seed=3, spec_extra={
        "metrics": {"validation": {"recall@100": 0.2612, "ndcg@10": 0.05}, "test": {"recall@100": 0.24}, "best_epoch": 3},
        "training_config": {"model": {"hidden_dims": [32, 16], "embedding_dim": 16}, "lr": 0.01},
    })
    _run("models", "register", str(export))
    text = _run("models", "show", "movies", "--version", "3").stdout
    for section in ("movies v3 (registered)", "serving", "artifacts", "collection", "features", "metrics",
                    "training config"):
        assert section in text, section
    assert "{'" not in text and "['" not in text and "': " not in text  # no dict or list repr anywhere
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines())
            if cells}
    assert rows["recall@100"] == ["0.2612", "0.2400"]  # one column per stage, in the order stored: validation, test
    assert rows["ndcg@10"] == ["0.0500", "-"] and rows["best_epoch"] == ["3", ""]
    assert rows["model.hidden_dims"] == ["32, 16"] and rows["lr"] == ["0.0100"]  # nested settings, dotted paths
    assert rows["user_profile"] == ["age"] and rows["item_profile"] == ["genres"]  # features grouped by view
    assert rows["alias"] == ["movies -> movies__v1"] and rows["state"] == ["ok"]  # v1 serves, not this version
    record = json.loads(_run("models", "show", "movies", "--version", "3", "--json").stdout)
    with SqlRegistryStore(url) as registry:
        stored = registry.get_version("movies", 3)
    assert record["metrics"] == stored.metrics and record["training_config"] == stored.training_config
    assert record["features"] == ["user_profile__age", "item_profile__genres"]
    assert record["artifacts"]["query.onnx"]["sha256"] == stored.artifact("query.onnx").sha256
    assert set(record) == {
        "model", "version", "status", "artifacts", "feature_service", "features", "training_config", "fingerprint",
        "window_start", "window_end", "estimator_path", "metrics", "created_at", "created_by", "collection", "serving",
    }


def test_register_dry_run_on_a_fresh_home_creates_nothing(tmp_path, monkeypatch, exported_model):
    home = tmp_path / "home"
    monkeypatch.setenv("TOWER_HOME", str(home))
    monkeypatch.delenv("TOWER_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        exported_model(tmp_path / "v4", version=4)
        planned = json.loads(_run("models", "register", str(tmp_path / "v4"), "--dry-run", "--json").stdout)
        assert (planned["version"], planned["creates_schema"]) == (4, True)  # the version the export names
        exported_model(tmp_path / "next")
        assert json.loads(_run("models", "register", str(tmp_path / "next"), "--dry-run", "--json").stdout)[
            "version"] == 1
        assert not home.exists()  # no registry file, no schema, no folder
        real = json.loads(_run("models", "register", str(tmp_path / "v4"), "--json").stdout)
        assert real["version"] == 4 and (home / "registry.db").is_file()
    finally:
        get_settings.cache_clear()
