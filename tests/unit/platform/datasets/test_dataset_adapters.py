"""Adapters and ingestion: canonical tables, atomic writes, and bad input refused with file and column named."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tower_platform.datasets import ADAPTERS, get_adapter, ingest, load_dataset_config
from tower_platform.errors import ConfigError, InputError, UsageError

ML100K = Path(__file__).resolve().parents[4].parent / "shared" / "datasets" / "movielens-100k"

MOVIES = "movieId,title,genres\n10,Alpha (1995),Comedy|Drama\n20,Beta,(no genres listed)\n30,\"Gamma, The (2001)\",Action\n"
RATINGS = "userId,movieId,rating,timestamp\n1,10,4.0,1000\n1,20,3.5,2000\n2,10,5.0,1500\n2,30,2.0,90000\n"


def write_dataset(folder: Path, *, ratings: str = RATINGS, movies: str = MOVIES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ratings, encoding="utf-8")
    (folder / "movies.csv").write_text(movies, encoding="utf-8")
    return folder


def write_config(folder: Path, *, source: str | None = "data", extra: str = "") -> Path:
    path = folder / "tiny.yaml"
    src = "null" if source is None else source
    path.write_text(f"name: tiny\nadapter: movielens-latest\nmodel: movies\nsource: {src}\n{extra}", encoding="utf-8")
    return path


def test_registry_lists_both_adapters_and_names_unknown_ones():
    assert {"movielens-latest", "movielens-100k"} <= set(ADAPTERS)
    with pytest.raises(ConfigError, match="nope"):
        get_adapter("nope")


def test_latest_adapter_reads_canonical_tables(tmp_path):
    raw = get_adapter("movielens-latest").read(write_dataset(tmp_path / "data"))
    assert raw.interactions.column_names == ["user_id", "item_id", "event_timestamp", "rating"]
    assert str(raw.interactions.schema.field("event_timestamp").type) == "timestamp[us, tz=UTC]"
    assert raw.interactions.column("event_timestamp")[0].as_py().timestamp() == 1000
    items = raw.items.to_pydict()
    assert items["genres"] == [["Comedy", "Drama"], [], ["Action"]]  # "(no genres listed)" is no genre
    assert items["release_year"] == [1995, None, 2001]
    assert items["title"][2] == "Gamma, The (2001)"


def test_ingest_writes_every_source_and_the_schema(tmp_path):
    config = load_dataset_config(write_config(tmp_path, extra="weight: rating\n"))
    write_dataset(tmp_path / "data")
    report = ingest(config, home_dir=tmp_path / "home")
    sources = tmp_path / "home" / "sources"
    assert sorted(p.name for p in sources.iterdir()) == sorted(
        ["interactions.parquet", "user_history.parquet", "item_profile.parquet", "item_stats.parquet", "schema.json"]
    )
    schema = json.loads((sources / "schema.json").read_text())
    assert schema["dataset"] == "tiny" and schema["source_fingerprint"] == report.source_fingerprint
    assert "user_profile" not in schema["views"]  # no demographics in this dataset
    interactions = pq.read_table(sources / "interactions.parquet").to_pydict()
    assert interactions["weight"] == [0.8, 1.0, 0.7, 0.4]  # rating / 5, sorted by time
    profile = pq.read_table(sources / "item_profile.parquet").to_pydict()
    assert profile["category"] == ["Comedy", None, "Action"]
    # static rows: UTC midnight one day before the first event (t = 1000 s -> 1969-12-31)
    assert profile["event_timestamp"][0].isoformat() == "1969-12-31T00:00:00+00:00"


@pytest.mark.parametrize(
    ("ratings", "movies", "column", "words"),
    [
        ("userId,movieId,timestamp\n1,10,1000\n", MOVIES, "rating", "no column"),
        ("userId,movieId,rating,timestamp\n1,10,good,1000\n", MOVIES, "rating", "not a number"),
        ("userId,movieId,rating,timestamp\n1,10,4.0,2020-01-01\n", MOVIES, "timestamp", "not a Unix time"),
        ("userId,movieId,rating,timestamp\n1,10,4.0,1000\n1,10,3.0,1000\n", MOVIES, "timestamp", "duplicate"),
        ("", MOVIES, None, "empty"),
        ("userId,movieId,rating,timestamp\n", MOVIES, None, "no rows"),
        (RATINGS, "movieId,title\n10,A\n", "genres", "no column"),
    ],
)
def test_bad_input_names_file_and_column_and_writes_nothing(tmp_path, ratings, movies, column, words):
    config = load_dataset_config(write_config(tmp_path))
    write_dataset(tmp_path / "data", ratings=ratings, movies=movies)
    with pytest.raises(InputError) as caught:
        ingest(config, home_dir=tmp_path / "home")
    message = str(caught.value)
    assert words in message
    assert ".csv" in message
    if column:
        assert column in message
    assert not (tmp_path / "home" / "sources").exists()
    assert not any((tmp_path / "home").glob(".sources*")) if (tmp_path / "home").exists() else True


def test_failed_reingest_keeps_the_previous_sources(tmp_path):
    config = load_dataset_config(write_config(tmp_path))
    write_dataset(tmp_path / "data")
    first = ingest(config, home_dir=tmp_path / "home")
    write_dataset(tmp_path / "data", ratings="userId,movieId,rating,timestamp\n1,10,x,1\n")
    with pytest.raises(InputError):
        ingest(config, home_dir=tmp_path / "home")
    schema = json.loads((tmp_path / "home" / "sources" / "schema.json").read_text())
    assert schema["source_fingerprint"] == first.source_fingerprint
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["sources"]


def test_missing_source_path_and_missing_source_setting(tmp_path):
    config = load_dataset_config(write_config(tmp_path, source="nowhere"))
    with pytest.raises(InputError, match="nowhere.*does not exist"):
        ingest(config, home_dir=tmp_path / "home")
    config = load_dataset_config(write_config(tmp_path, source=None))
    with pytest.raises(UsageError, match="--source"):
        ingest(config, home_dir=tmp_path / "home")
    assert not (tmp_path / "home" / "sources").exists()


needs_100k = pytest.mark.skipif(not ML100K.is_dir(), reason=f"MovieLens-100K not found at {ML100K}")


@needs_100k
def test_100k_adapter_reads_users_items_and_latin1_titles():
    raw = get_adapter("movielens-100k").read(ML100K)
    assert raw.interactions.num_rows == 100_000
    assert raw.items.num_rows == 1682 and raw.users.num_rows == 943
    first_item = raw.items.slice(0, 1).to_pylist()[0]
    assert first_item["title"] == "Toy Story (1995)"
    assert first_item["genres"] == ["Animation", "Children's", "Comedy"]
    assert first_item["release_year"] == 1995
    assert any("é" in t for t in raw.items.column("title").to_pylist())  # Latin-1 decoded
    user = raw.users.slice(0, 1).to_pylist()[0]
    assert user == {"user_id": "1", "age": 24, "gender": "M", "occupation": "technician", "zip_prefix": "857"}


@needs_100k
def test_100k_ingest_adds_the_user_profile_view(tmp_path):
    from tower_platform.paths import bundled_config

    report = ingest(load_dataset_config(bundled_config("movielens-100k")), home_dir=tmp_path, source=ML100K)
    assert "user_profile" in report.views
    schema = json.loads((tmp_path / "sources" / "schema.json").read_text())
    assert schema["views"]["user_profile"]["fields"] == {
        "age": "int64", "gender": "string", "occupation": "string", "zip_prefix": "string"
    }
