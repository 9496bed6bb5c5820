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


def _table_rows(text: str, title: str) -> dict[str, list[str]]:
    """The cells of the rich table whose title starts with ``title``, by segment name."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = {}
    for line in lines[start + 4 :]:
        if not line.startswith("│"):
            break
        cells = [c.strip() for c in line.split("│")[1:-1]]
        rows[cells[0]] = cells
    return rows


def test_alignment_json_breach_exit_code_plot_and_summary_match(two_versions, tmp_path):
    healthy = json.loads(_run("monitor", "alignment", "movies", "--json").stdout)  # default: production, v1
    assert healthy["version"] == 1 and healthy["against_version"] is None and healthy["breaches"] == []

    png, full = tmp_path / "plots" / "v2.png", tmp_path / "reports" / "v2.json"
    result = _run("monitor", "alignment", "movies", "--version", "2", "--json", "--plot", str(png), "--out", str(full),
                  code=10)
    report = json.loads(result.stdout)
    assert report["version"] == 2 and report["run"] == 1 and report["against_version"] == 1
    assert {(b["segment"], b["figure"]) for b in report["breaches"]} >= {("C", "relative_alignment"), ("C", "coverage")}
    assert report["summary"]["categories"] == 3 and report["summary"]["breaching_segments"] == 1
    assert json.loads(full.read_text()) == report  # --out holds the same whole report
    stderr = result.stderr.strip().splitlines()
    error = next(line for line in stderr if line.startswith("error: "))
    assert error.startswith("error: Model 'movies' version 2 fails its alignment gates: ")
    assert "the full list: `towerctl monitor alignment movies --version 2 --run 1 --json`" in error
    assert stderr[stderr.index(error) + 1].startswith("  - category 'C': alignment distance 1.000")

    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (1200, 1400)  # FIGSIZE x DPI, whatever the number of categories

    table = _run("monitor", "alignment", "movies", "--version", "2", "--run", "1", code=10).stdout
    assert table == _run("monitor", "alignment", "movies", "--version", "2", "--stored", code=10).stdout
    farthest = _table_rows(table, "worst 3 of 3 gated segments by largest alignment distance")
    assert list(farthest) == ["C", "B", "A"] or list(farthest)[0] == "C"  # C is collapsed: distance 1.0
    for segment in report["segments"]:
        if segment["kind"] != "category":
            continue
        cells = farthest[segment["segment"]]
        assert cells[1] == str(segment["item_count"])
        assert cells[3] == format_cell(segment["relative_alignment"])
        assert cells[7] == format_cell(segment["recall"])
        assert cells[10] == format_cell(segment["coverage"])
    assert "3 categories evaluated: 3 gated on every check" in table
    assert "coverage@10 0.000 below the minimum" in table


def test_small_categories_are_pooled_and_the_pool_is_stored_beside_them(two_versions):
    # min_items 35: B and C (30 items each) are pooled, A (40) stays on its own; the pool holds B + C = 60 items
    report = json.loads(_run("monitor", "alignment", "movies", "--version", "2", "--json", code=10).stdout)
    Path(get_settings().monitor_config).write_text("monitor:\n  k: 10\n  min_items: 35\n  min_queries: 5\n")
    get_settings.cache_clear()
    pooled = json.loads(_run("monitor", "alignment", "movies", "--version", "2", "--json").stdout)
    by = {(s["kind"], s["segment"]): s for s in pooled["segments"]}
    assert [n for (k, n), s in by.items() if k == "category" and s["pooled"]] == ["B", "C"]
    pool = by["pooled", "small categories"]
    assert pool["item_count"] == 60 and pool["n_queries"] == by["category", "B"]["n_queries"] + by["category", "C"]["n_queries"]
    assert by["category", "C"]["relative_alignment"] == 1.0  # the raw figure is kept ...
    # ... but C is no longer judged alone, and the pool passes (the price of pooling: a small collapsed category
    # hides in it); its coverage is B's reached items over the 60 items of the pool
    assert pooled["breaches"] == [] and pooled["summary"]["pooled"] == 2
    assert pool["coverage"] == pytest.approx(by["category", "B"]["coverage"] / 2)
    assert pooled["run"] == report["run"] + 1 and pool["deltas"]["coverage"] is not None  # v1 pooled the same way


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
