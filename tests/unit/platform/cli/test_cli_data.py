"""`towerctl data ingest` and `towerctl features apply | materialize | build-training-set` through CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from tower_platform.cli.main import app
from tower_platform.paths import bundled_config
from tower_platform.settings import get_settings

runner = CliRunner()

T = 1_600_000_000
MOVIES = "movieId,title,genres\n10,Alpha (1990),Drama\n20,Beta (1991),Comedy|Drama\n30,Gamma (1992),Action\n"
RATINGS = "userId,movieId,rating,timestamp\n" + "".join(
    f"{u},{i},{r},{t}\n" for u, i, r, t in [(1, 10, 4.0, T), (1, 20, 3.0, T + 60), (2, 10, 5.0, T + 30), (2, 30, 1.0, T + 90),
                                             (3, 20, 2.0, T + 120), (1, 30, 4.5, T + 150), (3, 10, 3.5, T + 180),
                                             (2, 20, 4.0, T + 210), (3, 30, 5.0, T + 240), (4, 10, 1.0, T + 270)]
)  # fmt: skip


def _dataset(folder: Path, *, ratings: str = RATINGS, movies: str = MOVIES) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / "ratings.csv").write_text(ratings)
    (folder / "data" / "movies.csv").write_text(movies)
    config = folder / "tiny.yaml"
    body = yaml.safe_load(bundled_config().read_text(encoding="utf-8"))  # the latest-small config on other files
    body.update(name="tiny", source="data")
    config.write_text(yaml.safe_dump(body, sort_keys=False))
    return config


def _use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("TOWER_HOME", str(home))
    monkeypatch.delenv("TOWER_FEATURE_REPO", raising=False)
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("ratings", "column", "words"),
    [
        ("userId,movieId,timestamp\n1,10,1000\n", "rating", "column 'rating' is not in"),
        ("userId,movieId,rating,timestamp\n1,10,4.0,1000\n2,10,high,1000\n", "rating", "1 values are not numbers"),
        ("userId,movieId,rating,timestamp\n1,10,4.0,yesterday\n", "timestamp", "do not parse as 'epoch_s'"),
        ("userId,movieId,rating,timestamp\n1,10,4.0,1000\n1,10,4.0,1000\n", "timestamp", "interactions are repeated"),
        ("", None, "cannot be read"),
    ],
)
def test_ingest_refuses_bad_input_with_exit_2_and_writes_nothing(tmp_path, monkeypatch, ratings, column, words):
    _use_home(monkeypatch, tmp_path / "home")
    config = _dataset(tmp_path, ratings=ratings)
    result = runner.invoke(app, ["data", "ingest", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("error: ") == 1 and words in result.stderr
    assert "ratings.csv" in result.stderr
    if column:
        assert column in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "home" / "sources").exists()


def test_ingest_refuses_a_missing_source_path(tmp_path, monkeypatch):
    _use_home(monkeypatch, tmp_path / "home")
    config = _dataset(tmp_path)
    result = runner.invoke(app, ["data", "ingest", "--config", str(config), "--source", str(tmp_path / "absent")])
    assert result.exit_code == 2
    assert "absent" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "home" / "sources").exists()


def test_ingest_refuses_a_missing_config(tmp_path, monkeypatch):
    _use_home(monkeypatch, tmp_path / "home")
    result = runner.invoke(app, ["data", "ingest", "--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "none.yaml" in result.stderr


def test_features_commands_before_ingest_say_what_to_run(tmp_path, monkeypatch):
    _use_home(monkeypatch, tmp_path / "home")
    result = runner.invoke(app, ["features", "apply"])
    assert result.exit_code == 3
    assert "towerctl data ingest" in result.stderr


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory):
    """A home where the tiny dataset went through ingest, apply and materialize via the CLI (once per module)."""
    folder = tmp_path_factory.mktemp("cli")
    config = _dataset(folder)
    with pytest.MonkeyPatch.context() as patch:
        _use_home(patch, folder / "home")
        results = {
            "ingest": runner.invoke(app, ["data", "ingest", "--config", str(config), "--json"]),
            "apply": runner.invoke(app, ["features", "apply"]),
            "materialize": runner.invoke(app, ["features", "materialize", "--start", "2020-01-01", "--json"]),
        }
        yield folder, config, results, patch


def test_ingest_apply_materialize(cli_home):
    folder, _, results, _ = cli_home
    ingest = results["ingest"]
    assert ingest.exit_code == 0, ingest.output
    report = json.loads(ingest.stdout)
    assert report["dataset"] == "tiny" and report["rows"]["interactions"] == 10
    assert "ingesting tiny" in ingest.stderr  # diagnostics on stderr
    assert results["apply"].exit_code == 0, results["apply"].output
    assert "query_features" in results["apply"].stdout and "item_features" in results["apply"].stdout
    materialized = results["materialize"]
    assert materialized.exit_code == 0, materialized.output
    assert json.loads(materialized.stdout)["start"].startswith("2020-01-01")
    assert (folder / "home" / "feast" / "online.db").is_file()


def test_build_training_set_prints_the_audit_and_writes_parquet(cli_home):
    folder, config, _, _ = cli_home
    out = folder / "train.parquet"
    result = runner.invoke(app, ["features", "build-training-set", "--config", str(config), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["audit"]["passed"] is True
    assert payload["audit"]["rows_in"] == payload["audit"]["rows_out"] == 10
    # 10 interactions: cutoff_val = ts[8] = T + 240, cutoff_test = ts[9] = T + 270
    assert payload["audit"]["split_sizes"] == {"train": 8, "validation": 1, "test": 1}
    table = pq.read_table(out)
    assert table.num_rows == 10
    assert json.loads(table.schema.metadata[b"tower.audit"])["fingerprint"] == payload["audit"]["fingerprint"]

    table_run = runner.invoke(app, ["features", "build-training-set", "--config", str(config)])
    assert table_run.exit_code == 0
    assert payload["audit"]["fingerprint"][:20] in table_run.stdout
    assert "user_history__recent_items" in table_run.stdout  # null-rate table


def test_build_training_set_refuses_a_config_of_another_dataset(cli_home):
    result = runner.invoke(app, ["features", "build-training-set"])  # bundled config, but 'tiny' is ingested
    assert result.exit_code == 6
    assert "movielens-latest-small" in result.stderr and "tiny" in result.stderr


def test_build_training_set_refuses_a_non_parquet_out(cli_home):
    _, config, _, _ = cli_home
    result = runner.invoke(app, ["features", "build-training-set", "--config", str(config), "--out", "x.csv"])
    assert result.exit_code == 2 and "x.csv" in result.stderr
