"""A retail purchase log brought with one config file, end to end through the CLI.

Implicit feedback (no rating), 1,500 sub classes as the category, a price, baskets of 2-20 purchases sharing one
timestamp, ids with spaces and non-ASCII characters, customers with an age band and an area, articles never bought:
`towerctl run --config retail.yaml --promote` reaches a promoted version, then `recommend` shows the display column
and `monitor alignment` measures the version per sub class.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from retail_dataset import write_retail_dataset
from typer.testing import CliRunner

TINY = ["--set", "epochs=1", "--set", "max_steps=10", "--set", "embedding_dim=16", "--set", "output_dim=16",
        "--set", "hidden_dims=[32]", "--set", "batch_size=256"]

runner = CliRunner()


@pytest.fixture(scope="module")
def retail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    from tower_platform.settings import get_settings

    root = tmp_path_factory.mktemp("retail").resolve()
    config = write_retail_dataset(root / "data")
    shm = Path("/dev/shm")
    vectors_dir = Path(tempfile.mkdtemp(prefix="tower-vectors-", dir=shm if shm.is_dir() else None))
    lenient = root / "monitor-lenient.yaml"  # a 10-step model serves many sub classes badly: gate on norms only
    lenient.write_text("monitor:\n  min_coverage: 0.0\n  max_alignment_distance: 1.0\n  max_recall_drop: 1.0\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOWER_HOME", str(root / "home"))
        patch.setenv("TOWER_EDGE__PATH", str(vectors_dir))
        patch.setenv("TOWER_MONITOR_CONFIG", str(lenient))
        patch.delenv("TOWER_DATABASE_URL", raising=False)
        patch.delenv("TOWER_QDRANT__URL", raising=False)
        patch.delenv("TOWER_FEATURE_REPO", raising=False)
        get_settings.cache_clear()
        yield root, config
    get_settings.cache_clear()
    shutil.rmtree(vectors_dir, ignore_errors=True)


def _invoke(*args: str):
    from tower_platform.cli.main import app

    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def run(retail):
    _, config = retail
    result = _invoke("run", "--config", str(config), "--promote", "--json", *TINY)
    assert result.exit_code == 0, result.stderr + (repr(result.exception) if result.exception else "")
    return json.loads(result.stdout)


def test_run_promotes_a_version_of_the_retail_model(retail, run):
    assert run["model"] == "products" and run["version"] == 1
    assert run["audit"]["passed"] is True and run["audit"]["rows_in"] == run["audit"]["rows_out"]
    assert run["collection"]["items"] == 2_000  # never-bought articles are indexed too
    assert run["promoted"] is True
    root, _ = retail
    schema = json.loads((root / "home" / "sources" / "schema.json").read_text())
    assert "rating" not in json.dumps(schema)  # implicit feedback: no rating anywhere
    assert schema["item_category"] == "item_profile__sub_class"


def test_training_set_has_the_configured_features_and_no_rating(retail, run):
    import pyarrow.parquet as pq

    folder = Path(run["artifacts"])
    spec = json.loads((folder / "spec.json").read_text())
    text = json.dumps(spec)
    for name in ("user_history__top_sub_classes", "user_history__hours_since_previous", "user_profile__age_band",
                 "item_stats__trending_7d", "item_profile__sub_class", "item_profile__price"):
        assert name in text
    assert "rating" not in text
    training_sets = list(folder.rglob("*.parquet"))
    if training_sets:
        columns = pq.read_schema(training_sets[0]).names
        assert "rating" not in columns


def test_recommend_shows_the_display_column(run):
    user = run["recommendations"]["user_id"]
    result = _invoke("recommend", user, "-k", "5", "--json")
    assert result.exit_code == 0, result.stderr
    items = json.loads(result.stdout)["items"]
    assert len(items) == 5
    assert all(item["display"].startswith("Artikel ") for item in items)
    assert all(item["category"].startswith("sub class ") for item in items)
    table = _invoke("recommend", user, "-k", "3")
    assert table.exit_code == 0 and "Artikel" in table.stdout


def test_monitor_alignment_measures_the_sub_classes(run):
    result = _invoke("monitor", "alignment", "products", "--json")
    assert result.exit_code in (0, 10), result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "products" and report["version"] == 1
    categories = [s for s in report["segments"] if s["kind"] == "category"]
    assert len(categories) > 100 and all(s["segment"].startswith("sub class ") for s in categories)


def test_evaluate_runs_every_baseline_with_the_ease_item_cut(retail, run):
    _, config = retail
    result = _invoke("evaluate", "--config", str(config), "--baselines", "--stage", "validation", "--json",
                     "--ease-max-items", "300", "--recent-days", "7", "--recent-days", "30")
    assert result.exit_code == 0, result.stderr
    reports = json.loads(result.stdout)
    assert list(reports) == ["MostPopular", "MostPopular (last 7 days)", "MostPopular (last 30 days)", "ItemKNN",
                             "EASE (l2 200)"]
    assert all(r["n_queries"] == reports["MostPopular"]["n_queries"] > 0 for r in reports.values())
    # the generator sells 1,800 of its 2,000 articles: more fit items than the 300 EASE covers
    assert "EASE covers 300 of " in result.stderr
    bad = _invoke("evaluate", "--config", str(config), "--recent-days", "0")
    assert bad.exit_code == 2 and "--recent-days" in bad.stderr
