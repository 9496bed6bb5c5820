"""The registry stores artifact paths relative to $TOWER_HOME, so a copied, moved or restored home reads its own
files; rows written with absolute paths (before this, or for exports outside the home) still read as they are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from tower_platform.cli.main import app
from tower_platform.registry.artifact import verify_artifacts
from tower_platform.registry.store import SqlRegistryStore
from tower_platform.settings import get_settings

runner = CliRunner()


def _use_home(monkeypatch, home: Path) -> None:
    monkeypatch.setenv("TOWER_HOME", str(home))
    monkeypatch.delenv("TOWER_DATABASE_URL", raising=False)
    monkeypatch.delenv("TOWER_QDRANT__URL", raising=False)
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _register(*args: str) -> dict:
    result = runner.invoke(app, ["models", "register", *args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _raw_paths(url: str) -> list[tuple[str, str, str | None]]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT query_onnx_path, spec_path, estimator_path FROM model_versions ORDER BY version")
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_a_copied_home_reads_its_own_artifacts(tmp_path, monkeypatch, exported_model):
    original = (tmp_path / "original").resolve()
    _use_home(monkeypatch, original)
    export = original / "artifacts" / "movies" / "run-1"
    exported_model(export, spec_extra={"estimator_path": "estimator.npz"})
    (export / "estimator.npz").write_bytes(b"state")
    created = _register(str(export))
    assert created["artifacts"]["query.onnx"]["path"] == str(export / "query.onnx")
    # stored relative to the home: "artifacts/movies/run-1/query.onnx"
    assert _raw_paths(f"sqlite:///{original / 'registry.db'}") == [
        ("artifacts/movies/run-1/query.onnx", "artifacts/movies/run-1/spec.json", "artifacts/movies/run-1/estimator.npz")
    ]

    copy = (tmp_path / "restored" / "home").resolve()
    shutil.copytree(original, copy)
    shutil.rmtree(original)  # the copy must not need the original's files
    _use_home(monkeypatch, copy)
    result = runner.invoke(app, ["models", "show", "movies", "--json"])
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert {a["path"] for a in shown["artifacts"].values()} == {
        str(copy / "artifacts" / "movies" / "run-1" / name) for name in ("query.onnx", "item.onnx", "spec.json")
    }
    assert shown["estimator_path"] == str(copy / "artifacts" / "movies" / "run-1" / "estimator.npz")
    with SqlRegistryStore(f"sqlite:///{copy / 'registry.db'}", home_dir=copy) as registry:
        version = registry.get_version("movies", 1)
    verify_artifacts(version.artifacts, model="movies", version=1)  # the copy's files, sha256 as recorded


def test_exports_outside_the_home_and_old_absolute_rows_keep_absolute_paths(tmp_path, monkeypatch, exported_model):
    home = (tmp_path / "home").resolve()
    _use_home(monkeypatch, home)
    outside = (tmp_path / "exports" / "v1").resolve()
    exported_model(outside)
    created = _register(str(outside))
    assert created["artifacts"]["query.onnx"]["path"] == str(outside / "query.onnx")
    url = f"sqlite:///{home / 'registry.db'}"
    assert _raw_paths(url)[0][0] == str(outside / "query.onnx")  # not under the home: absolute

    inside = home / "artifacts" / "movies" / "v2"
    exported_model(inside, seed=2)
    _register(str(inside))
    engine = create_engine(url)  # a row written before paths were stored relative: absolute
    with engine.begin() as connection:
        connection.execute(text("UPDATE model_versions SET query_onnx_path = :p WHERE version = 2"),
                           {"p": str(inside / "query.onnx")})
    engine.dispose()
    with SqlRegistryStore(url, home_dir=tmp_path / "elsewhere") as registry:
        version = registry.get_version("movies", 2)
    assert version.artifact("query.onnx").path == str(inside / "query.onnx")  # absolute rows read unchanged
    assert version.artifact("spec.json").path == str(tmp_path / "elsewhere" / "artifacts" / "movies" / "v2" / "spec.json")


def test_relative_paths_on_postgresql_resolve_against_the_given_home(migrated_database_url, exported_model, tmp_path):
    home = (tmp_path / "home").resolve()
    artifacts = exported_model(home / "artifacts" / "movies" / "v1")
    with SqlRegistryStore(migrated_database_url, home_dir=home) as registry:
        registry.register_version(
            "movies", artifacts=artifacts, feature_service="movies_fs", features=[], training_config={},
            fingerprint="f", time_window=None, estimator_path=None, metrics={}, actor="t",
        )
    assert _raw_paths(migrated_database_url)[0][0] == "artifacts/movies/v1/query.onnx"
    moved = (tmp_path / "moved").resolve()
    shutil.move(home, moved)
    with SqlRegistryStore(migrated_database_url, home_dir=moved) as registry:
        version = registry.get_version("movies", 1)
    assert version.artifact("item.onnx").path == str(moved / "artifacts" / "movies" / "v1" / "item.onnx")
    verify_artifacts(version.artifacts, model="movies", version=1)
