"""``towerctl monitor alignment|history`` through CliRunner on the embedded default (SQLite + Qdrant local storage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor_world import add_version
from tower_platform.cli.main import app
from tower_platform.cli.output import format_cell, out_console
from tower_platform.settings import Settings, get_settings

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TOWER_HOME", str(home))
    monkeypatch.setenv("TOWER_MONITOR_CONFIG", str(tmp_path / "monitor.yaml"))
    (tmp_path / "monitor.yaml").write_text("monitor:\n  k: 10\n  min_items: 20\n  min_queries: 5\n")
    monkeypatch.delenv("TOWER_DATABASE_URL", raising=False)
    monkeypatch.delenv("TOWER_QDRANT__URL", raising=False)
    monkeypatch.setattr(out_console, "width", 250)  # whole table rows on one line each
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def two_versions(home, world) -> None:
    """v1 healthy and production, v2 with category C collapsed; both with test queries beside their artifacts."""
    from tower_platform.registry.migration import upgrade_schema
    from tower_platform.registry.promotion import promote
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.store import open_vector_store

    settings = Settings()
    settings.home_dir.mkdir(parents=True)
    upgrade_schema(settings.registry_url)
    with SqlRegistryStore(settings.registry_url) as registry, open_vector_store(settings) as vectors:
        add_version(registry, vectors, world, settings.artifacts_dir, collapsed=False)
        add_version(registry, vectors, world, settings.artifacts_dir, collapsed=True)
        promote(registry, vectors, "movies", 1, actor="ops")


def _run(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def test_alignment_json_breach_exit_code_plot_and_table_match(two_versions, tmp_path):
    healthy = json.loads(_run("monitor", "alignment", "movies", "--json").stdout)  # default: production, v1
    assert healthy["version"] == 1 and healthy["against_version"] is None and healthy["breaches"] == []

    png = tmp_path / "plots" / "v2.png"
    result = _run("monitor", "alignment", "movies", "--version", "2", "--json", "--plot", str(png), code=10)
    report = json.loads(result.stdout)
    assert report["version"] == 2 and report["run"] == 1 and report["against_version"] == 1
    assert {(b["segment"], b["figure"]) for b in report["breaches"]} >= {("C", "relative_alignment"), ("C", "coverage")}
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: Model 'movies' version 2 breaches") and "category 'C'" in error

    import matplotlib.image

    assert png.stat().st_size > 1000
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    table = _run("monitor", "alignment", "movies", "--version", "2", "--stored", code=10).stdout
    lines = table.splitlines()
    for segment in report["segments"]:
        row = next(line for line in lines if line.split("│")[1:2] and line.split("│")[1].strip() == segment["segment"]
                   and (segment["kind"] == "category") == (segment["segment"] in "ABC"))
        cells = [c.strip() for c in row.split("│")[1:-1]]
        assert cells[1] == str(segment["item_count"])
        assert cells[3] == format_cell(segment["relative_alignment"])
        assert cells[7] == format_cell(segment["recall"])
        assert cells[10] == format_cell(segment["coverage"])
    assert "breaches" in table and "coverage@10 0.000 below the minimum" in table


def test_history_shows_the_worst_category_per_version(two_versions):
    _run("monitor", "alignment", "movies", "--version", "1")
    _run("monitor", "alignment", "movies", "--version", "2", code=10)
    rows = json.loads(_run("monitor", "history", "movies", "--json").stdout)
    assert [r["version"] for r in rows] == [1, 2]
    assert rows[1]["lowest_coverage_category"] == "C" and rows[1]["lowest_coverage"] == 0.0
    assert rows[1]["farthest_category"] == "C" and rows[1]["breaches"] >= 2 and rows[0]["breaches"] == 0
    assert rows[1]["trend"] == pytest.approx(rows[1]["worst_recall"] - rows[0]["worst_recall"])
    table = _run("monitor", "history", "movies").stdout
    assert "worst category per version" in table


def test_stored_without_a_report_and_unknown_against_fail_with_one_line(two_versions):
    error = _run("monitor", "alignment", "movies", "--version", "2", "--stored", code=3).stderr
    assert "has no stored alignment report" in error
    error = _run("monitor", "alignment", "movies", "--version", "2", "--against", "latest", code=2).stderr
    assert "--against 'latest' is neither 'production' nor a version number" in error
