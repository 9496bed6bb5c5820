"""Timestamps outside the range the feature store can hold (pandas/Feast nanoseconds: 1677-09-23 .. 2262-04-11) are
refused at ingestion with the column, the first bad value and its row, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tower_platform.datasets import ingest, load_dataset_config
from tower_platform.errors import InputError

CONFIG = """name: clicks
model: clicks
source: data
interactions:
  path: events.csv
  user_id: u
  item_id: i
  timestamp: {{column: t, format: {format}}}
items:
  path: items.csv
  id: i
  attributes: {{shelf: {{kind: categorical}}}}
"""


def _config(tmp_path: Path, times: list[str], fmt: str) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(f"u{n % 2},i{n % 3},{t}\n" for n, t in enumerate(times))
    (data / "events.csv").write_text("u,i,t\n" + rows, encoding="utf-8")
    (data / "items.csv").write_text("i,shelf\ni0,a\ni1,b\ni2,a\n", encoding="utf-8")
    path = tmp_path / "clicks.yaml"
    path.write_text(CONFIG.format(format=fmt), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("times", "fmt", "first"),
    [
        (["964982703", "99999999999999"], "epoch_s", "99999999999999"),  # 3.2 million years: int64 µs overflow
        (["964982703", "-99999999999999"], "epoch_s", "-99999999999999"),
        (["964982703000", "9999999999999999999"], "epoch_ms", "9999999999999999999"),
        (["964982703", "100000000000000000000000"], "epoch_s", "100000000000000000000000"),
        (["2024-01-02T10:00:00Z", "9999-12-31T00:00:00Z"], "iso8601", "9999-12-31T00:00:00Z"),
        (["2024-01-02", "1200-01-01"], "date", "1200-01-01"),
    ],
)
def test_out_of_range_timestamps_are_refused_naming_the_value(tmp_path, times, fmt, first):
    config = load_dataset_config(_config(tmp_path, times, fmt))
    with pytest.raises(InputError) as caught:
        ingest(config, home_dir=tmp_path / "home")
    message = str(caught.value)
    assert "key 'interactions.timestamp', column 't'" in message
    assert "outside the time range the feature store holds (1677-09-23 .. 2262-04-11)" in message
    assert f"(first: {first!r} on data row 2)" in message
    assert not (tmp_path / "home").exists()


def test_the_cli_reports_an_out_of_range_timestamp_in_one_sentence(tmp_path, monkeypatch):
    from tower_platform.cli.main import app
    from tower_platform.settings import get_settings

    path = _config(tmp_path, ["964982703", "99999999999999"], "epoch_s")
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["data", "ingest", "--config", str(path)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "99999999999999" in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "sources").exists()


def test_timestamps_at_the_edges_of_the_range_are_kept(tmp_path):
    # 1677-09-23T00:00:00Z = -9_223_200_000 s (its static rows are stamped on 1677-09-22, still in pandas' range);
    # 2262-04-10T00:00:00Z = 9_223_200_000 s (106,750 days of 86,400 s after 1970-01-01)
    config = load_dataset_config(_config(tmp_path, ["-9223200000", "9223200000", "0"], "epoch_s"))
    report = ingest(config, home_dir=tmp_path / "home")
    assert report.first_event.year == 1677 and report.last_event.year == 2262
