"""The main job end to end through the CLI, on the bundled dataset with a tiny model.

`towerctl run --promote` must ingest, build the audited training set, train, evaluate, export parity-checked ONNX
towers, register, write and verify the collection, promote through one alias swap and recommend; then `evaluate`,
`recommend`, `models history` and a second `run` (v2, not promoted) work on what it left.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

TINY = ["--set", "epochs=1", "--set", "max_steps=15", "--set", "embedding_dim=16", "--set", "output_dim=16",
        "--set", "hidden_dims=[32]", "--set", "batch_size=512"]

runner = CliRunner()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from tower_platform.settings import get_settings

    home = tmp_path_factory.mktemp("main_job").resolve()
    shm = Path("/dev/shm")
    # the embedded vector store in memory-backed storage where there is one (a loaded disk does not slow the test)
    vectors_dir = Path(tempfile.mkdtemp(prefix="tower-vectors-", dir=shm if shm.is_dir() else None))
    lenient = home / "monitor-lenient.yaml"  # a 15-step model serves some categories badly: gate on norms only
    lenient.write_text("monitor:\n  min_coverage: 0.0\n  max_alignment_distance: 1000.0\n  max_recall_drop: 1.0\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOWER_HOME", str(home))
        patch.setenv("TOWER_EDGE__PATH", str(vectors_dir))
        patch.setenv("TOWER_MONITOR_CONFIG", str(lenient))
        patch.delenv("TOWER_DATABASE_URL", raising=False)
        patch.delenv("TOWER_QDRANT__URL", raising=False)
        get_settings.cache_clear()
        yield home
    get_settings.cache_clear()
    shutil.rmtree(vectors_dir, ignore_errors=True)


def _invoke(*args: str):
    from tower_platform.cli.main import app

    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def first_run(home: Path):
    from tower_platform.paths import bundled_config

    result = _invoke("run", "--config", str(bundled_config()), "--promote", "--json", "--reason", "first", *TINY)
    assert result.exit_code == 0, result.stderr + (repr(result.exception) if result.exception else "")
    return json.loads(result.stdout)


def test_run_promote_registers_indexes_promotes_and_recommends(home: Path, first_run):
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.settings import get_settings
    from tower_platform.vectors.store import open_vector_store

    assert first_run["model"] == "movies" and first_run["version"] == 1
    assert first_run["audit"]["passed"] is True
    assert first_run["audit"]["rows_in"] == first_run["audit"]["rows_out"] == 100_836
    test_metrics = first_run["metrics"]["test"]
    assert 0.0 <= test_metrics["recall@10"] <= test_metrics["recall@50"] <= test_metrics["recall@100"] <= 1.0
    assert test_metrics["n_queries"] == 8593  # the protocol's query count on this dataset (docs/evaluation.md)
    folder = Path(first_run["artifacts"])
    assert {"query.onnx", "item.onnx", "spec.json", "frequency_estimator.npz", "towers.pt"} <= {
        p.name for p in folder.iterdir()
    }
    assert first_run["collection"]["items"] == 9742 and first_run["collection"]["status"] == "indexed"
    assert first_run["promoted"] is True
    assert first_run["gates"]["gate"] == "alignment" and first_run["gates"]["measured"] is True
    assert first_run["gates"]["passed"] is True, first_run["gates"]["breaches"]
    assert (folder / "monitor").is_dir()  # the test queries the alignment monitor measures versions on
    recs = first_run["recommendations"]
    assert len(recs["items"]) == 10 and len({r["item_id"] for r in recs["items"]}) == 10

    settings = get_settings()
    with SqlRegistryStore(settings.registry_url) as registry:
        production = registry.production_version("movies")
        assert production is not None and production.version == 1 and production.status == "production"
        events = [e.action for e in registry.audit_log("movies")]
        stored = registry.latest_alignment_report("movies", 1)
    assert "promote" in events
    assert stored is not None, "the promotion gate stores the alignment report of the version it measured"
    with open_vector_store(settings) as vectors:
        assert vectors.alias_target("movies") == "movies__v1"


def test_recommend_excludes_the_users_recent_items(first_run):
    user = first_run["recommendations"]["user_id"]
    result = _invoke("recommend", user, "-k", "5", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["version"] == 1 and len(payload["items"]) == 5

    from tower_platform.features.store import FeastFeatureStore
    from tower_platform.settings import get_settings

    settings = get_settings()
    online = FeastFeatureStore(settings.feature_repo_dir, home_dir=settings.home_dir).online_features(
        "query_features", [{"user_id": user}]
    )
    recent = set(online["user_history__recent_items"][0] or [])
    assert recent, "the sample user has a history"
    assert not recent & {item["item_id"] for item in payload["items"]}


def test_evaluate_an_export_beside_a_baseline(first_run):
    result = _invoke("evaluate", "--artifacts", first_run["artifacts"], "--stage", "validation", "--json",
                     "--no-baselines")
    assert result.exit_code == 0, result.stderr
    reports = json.loads(result.stdout)
    (name, report), = reports.items()
    assert name.startswith("two-tower") and report["protocol"] == "next_item"
    assert report["n_queries"] > 0 and 0.0 <= report["metrics"]["recall@100"] <= 1.0


def test_evaluate_without_anything_to_evaluate_is_a_usage_error(first_run):
    result = _invoke("evaluate", "--no-baselines")
    assert result.exit_code == 2
    assert "Nothing to evaluate" in result.stderr


@pytest.fixture(scope="module")
def second_run(first_run):
    from tower_platform.paths import bundled_config

    result = _invoke("run", "--config", str(bundled_config()), "--json", *TINY)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_second_run_registers_v2_without_touching_production(first_run, second_run):
    assert second_run["version"] == 2 and second_run["promoted"] is False and second_run["gates"] is None
    assert second_run["collection"]["status"] == "indexed"
    assert second_run["audit"]["fingerprint"] == first_run["audit"]["fingerprint"]  # same data, same training set

    history = _invoke("models", "list", "movies", "--json")
    assert history.exit_code == 0, history.stderr
    statuses = {v["version"]: v["status"] for v in json.loads(history.stdout)}
    assert statuses == {1: "production", 2: "indexed"}


def test_gates_refuse_a_breaching_version_until_forced_and_rollback_returns(home: Path, second_run, monkeypatch):
    from tower_platform.settings import get_settings

    strict = home / "monitor-strict.yaml"  # every category must have all its items in someone's top-100: breached
    strict.write_text("monitor:\n  min_coverage: 1.0\n")
    monkeypatch.setenv("TOWER_MONITOR_CONFIG", str(strict))
    get_settings.cache_clear()
    try:
        refused = _invoke("models", "promote", "movies", "2")
        assert refused.exit_code == 10, refused.stderr
        assert "coverage" in refused.stderr and "category '" in refused.stderr and "--force" in refused.stderr
        assert _production_alias() == "movies__v1"

        no_reason = _invoke("models", "promote", "movies", "2", "--force")
        assert no_reason.exit_code == 2 and "--reason" in no_reason.stderr

        forced = _invoke("models", "promote", "movies", "2", "--force", "--reason", "accepted for the test", "--json")
        assert forced.exit_code == 0, forced.stderr
        assert _production_alias() == "movies__v2"
        events = json.loads(_invoke("models", "history", "movies", "--json").stdout)
        promote_v2 = [e for e in events if e["action"] == "promote" and e["version"] == 2]
        assert promote_v2 and promote_v2[-1]["reason"] == "accepted for the test"
        assert "coverage" in json.dumps(promote_v2[-1]["details"])  # the breaches travel with the override

        back = _invoke("models", "rollback", "movies", "--reason", "test done")
        assert back.exit_code == 0, back.stderr
        assert _production_alias() == "movies__v1"
    finally:
        get_settings.cache_clear()


def _production_alias() -> str | None:
    from tower_platform.settings import get_settings
    from tower_platform.vectors.store import open_vector_store

    with open_vector_store(get_settings()) as vectors:
        return vectors.alias_target("movies")


def test_run_with_a_bad_training_setting_names_the_section(home: Path):
    from tower_platform.paths import bundled_config

    result = _invoke("run", "--config", str(bundled_config()), "--set", "temperature=-1")
    assert result.exit_code == 6
    assert "training" in result.stderr and "temperature" in result.stderr


def test_train_exports_a_registrable_run_folder(home: Path, second_run):
    result = _invoke("train", "--json", *TINY)
    assert result.exit_code == 0, result.stderr
    trained = json.loads(result.stdout)
    folder = Path(trained["export"])
    assert folder.parent == home / "artifacts" / "movies" and folder.name.startswith("run-")
    assert trained["version"] == 3 and trained["parity_max_abs_diff"] <= 1e-5  # the next free version after v1, v2
    registered = _invoke("models", "register", str(folder), "--json")
    assert registered.exit_code == 0, registered.stderr
    assert json.loads(registered.stdout)["version"] == 3
