"""The generic tabular adapter and ingestion: formats, column mapping, bad data refused with config, key, column."""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tower_platform.datasets import ingest, load_dataset_config
from tower_platform.datasets.tabular import read_dataset
from tower_platform.errors import ConfigError, InputError

ML100K = Path(__file__).resolve().parents[4].parent / "shared" / "datasets" / "movielens-100k"

EVENTS = "customer,sku,when,qty\nann,p 1,2024-01-02T10:00:00Z,2\nbob,p 2,2024-01-02T11:00:00+01:00,1\nann,p2é,2024-01-03T09:30:00Z,3\n"
ITEMS = "sku,name,tags,price,family\np 1,Kettle,kitchen;steel,19.5,home\np 2,Mug,kitchen,4,home\np2é,Lamp (2019),light,30,deco\np 9,Unsold,,1,deco\n"
CONFIG = """name: shop
model: products
source: data
interactions:
  path: {events}
  user_id: customer
  item_id: sku
  timestamp: {{column: when, format: iso8601}}
  values: {{quantity: qty}}
  weight: {{column: qty, divide_by: 3}}
items:
  path: {items}
  id: sku
  display: name
  category: family
  missing: {missing}
  attributes:
    family: {{kind: categorical}}
    tags: {{kind: multi_categorical, separator: ";", length: 3}}
    price: {{kind: numeric, log1p: true}}
    year: {{column: name, kind: numeric, extract: '\\((\\d{{4}})\\)'}}
features:
  query:
    recent: {{type: recent_items, length: 5}}
    top_family: {{type: top_values, attribute: family, k: 2}}
    n_7d: {{type: count, window_days: 7}}
    mean_qty: {{type: mean, column: quantity}}
    since_previous: {{type: time_since_previous, unit: hours}}
  item:
    trending_7d: {{type: count, window_days: 7}}
    age: {{type: days_since_first}}
"""


def write(tmp_path: Path, *, events: str = EVENTS, items: str = ITEMS, events_name: str = "events.csv",
          items_name: str = "items.csv", missing: str = "keep", extra: str = "") -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for name, text in ((events_name, events), (items_name, items)):
        if name.endswith(".gz"):
            (data / name).write_bytes(gzip.compress(text.encode("utf-8")))
        elif name.endswith(".zip"):
            with zipfile.ZipFile(data / name, "w") as archive:
                archive.writestr(name.removesuffix(".zip"), text)
        else:
            (data / name).write_text(text, encoding="utf-8")
    path = tmp_path / "shop.yaml"
    path.write_text(CONFIG.format(events=events_name, items=items_name, missing=missing) + extra, encoding="utf-8")
    return path


@pytest.mark.parametrize(("events_name", "items_name"), [("events.csv", "items.csv"), ("events.csv.gz", "items.csv.zip")])
def test_canonical_tables_from_csv_gz_and_zip(tmp_path, events_name, items_name):
    config = load_dataset_config(write(tmp_path, events_name=events_name, items_name=items_name))
    raw = read_dataset(config, config.base_dir())
    events = raw.interactions.to_pydict()
    assert events["user_id"] == ["ann", "bob", "ann"] and events["item_id"] == ["p 1", "p 2", "p2é"]
    assert [t.isoformat() for t in events["event_timestamp"]] == [
        "2024-01-02T10:00:00+00:00", "2024-01-02T10:00:00+00:00", "2024-01-03T09:30:00+00:00"]
    assert events["weight"] == [2 / 3, 1 / 3, 1.0] and events["quantity"] == [2.0, 1.0, 3.0]
    assert "rating" not in events  # implicit: no rating unless declared
    items = raw.items.to_pydict()
    assert items["display"] == ["Kettle", "Mug", "Lamp (2019)", "Unsold"]
    assert items["tags"] == [["kitchen", "steel"], ["kitchen"], ["light"], []]
    assert items["year"] == [None, None, 2019.0, None]
    assert items["price"][1] == pytest.approx(1.6094379)  # log1p(4)


def test_headerless_tsv_and_parquet_with_integer_ids(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.tsv").write_text("1\t10\t1700000000000\n2\t20\t1700000360000\n", encoding="utf-8")
    pq.write_table(pa.table({"id": pa.array([10, 20, 30]), "kind": ["a", "b", "a"]}), data / "items.parquet")
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: n\nmodel: m\nsource: data\n"
        "interactions: {path: events.tsv, header: false, columns: [u, i, t], user_id: u, item_id: i,"
        " timestamp: {column: t, format: epoch_ms}}\n"
        "items: {path: items.parquet, id: id, attributes: {kind: {kind: categorical}}, category: kind}\n"
    )
    config = load_dataset_config(path)
    raw = read_dataset(config, config.base_dir())
    assert raw.interactions.column("user_id").to_pylist() == ["1", "2"]
    assert raw.items.column("item_id").to_pylist() == ["10", "20", "30"]  # ids are strings whatever their type
    assert raw.interactions.column("event_timestamp")[1].as_py().timestamp() == 1_700_000_360


def test_rating_filter_keeps_positives_and_strptime_with_time_zone(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "r.csv").write_text("u;i;r;t\na;x;5;02/01/2024 10:30\na;y;2;02/01/2024 11:30\nb;x;4;03/01/2024 08:00\n")
    (data / "i.csv").write_text("i;g\nx;A\ny;B\n")
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: n\nmodel: m\nsource: data\n"
        "interactions: {path: r.csv, delimiter: ';', user_id: u, item_id: i, rating: r, filter: {column: r, op: '>=', value: 4},"
        " timestamp: {column: t, format: '%d/%m/%Y %H:%M', timezone: Europe/Paris}}\n"
        "items: {path: i.csv, delimiter: ';', id: i, attributes: {g: {kind: categorical}}}\n"
    )
    config = load_dataset_config(path)
    events = read_dataset(config, config.base_dir()).interactions.to_pydict()
    assert events["item_id"] == ["x", "x"] and events["rating"] == [5.0, 4.0]
    assert events["event_timestamp"][0].isoformat() == "2024-01-02T09:30:00+00:00"  # 10:30 in Paris (UTC+1)


def test_missing_items_are_kept_dropped_or_refused(tmp_path):
    events = EVENTS + "cid,p 404,2024-01-04T00:00:00Z,1\n"
    config = load_dataset_config(write(tmp_path, events=events, missing="keep"))
    raw = read_dataset(config, config.base_dir())
    assert raw.missing_items == 1 and "p 404" in raw.items.column("item_id").to_pylist()
    config = load_dataset_config(write(tmp_path, events=events, missing="drop"))
    raw = read_dataset(config, config.base_dir())
    assert raw.missing_items == 1 and "p 404" not in raw.interactions.column("item_id").to_pylist()
    config = load_dataset_config(write(tmp_path, events=events, missing="error"))
    with pytest.raises(InputError, match=r"key 'items.missing', column 'sku' of .*items.csv: 1 items .*set items.missing"):
        read_dataset(config, config.base_dir())


def test_ingest_writes_views_named_by_the_config(tmp_path):
    config = load_dataset_config(write(tmp_path))
    report = ingest(config, home_dir=tmp_path / "home")
    schema = json.loads((tmp_path / "home" / "sources" / "schema.json").read_text())
    assert schema["views"]["user_history"]["fields"] == {
        "recent": "list<string>", "top_family": "list<string>", "n_7d": "int64", "mean_qty": "float64",
        "since_previous": "float64"}
    assert schema["views"]["item_stats"]["fields"] == {"trending_7d": "int64", "age": "float64"}
    assert schema["views"]["item_profile"]["fields"] == {"family": "string", "tags": "list<string>", "price": "float64", "year": "float64"}
    assert schema["item_category"] == "item_profile__family" and schema["display"] is True
    assert schema["vocab_groups"]["user_history__top_family"] == schema["vocab_groups"]["item_profile__family"]
    assert schema["vocab_groups"]["user_history__recent"] == "item_id"
    assert schema["elapsed"] == {"user_history__since_previous": 3600.0, "item_stats__age": 86400.0}
    assert report.rows["item_profile"] == 4  # the never-bought item is part of the corpus


@pytest.mark.parametrize(
    ("change", "key", "column", "words"),
    [
        ({"events": EVENTS.replace("qty", "quantity")}, "interactions", "qty", "is not in"),
        ({"items": ITEMS.replace("19.5", "cheap")}, "items.attributes.price", "price", "not numbers"),
        ({"events": EVENTS.replace("bob", "")}, "interactions.user_id", "customer", "1 rows have no id"),
        ({"events": EVENTS.replace("2024-01-03T09:30:00Z", "yesterday")}, "interactions.timestamp", "when", "do not parse"),
        ({"events": "customer,sku,when,qty\n"}, "interactions", None, "no rows"),
        ({"events": EVENTS + "ann,p 1,2024-01-02T10:00:00Z,1\n"}, "interactions", "when", "repeated"),
        ({"items": ITEMS + "p 1,Again,,1,home\n"}, "items.id", "sku", "more than once"),
    ],
)
def test_bad_data_names_config_key_column_and_writes_nothing(tmp_path, change, key, column, words):
    config = load_dataset_config(write(tmp_path, **change))
    with pytest.raises(InputError) as caught:
        ingest(config, home_dir=tmp_path / "home")
    message = str(caught.value)
    assert str(config.path) in message and f"key '{key}" in message and words in message
    if column:
        assert f"'{column}'" in message
    assert caught.value.exit_code == 2
    assert not (tmp_path / "home").exists()


def test_failed_reingest_keeps_the_previous_sources(tmp_path):
    config = load_dataset_config(write(tmp_path))
    first = ingest(config, home_dir=tmp_path / "home")
    write(tmp_path, events=EVENTS.replace("2024-01-03T09:30:00Z", "never"))
    with pytest.raises(InputError):
        ingest(config, home_dir=tmp_path / "home")
    schema = json.loads((tmp_path / "home" / "sources" / "schema.json").read_text())
    assert schema["source_fingerprint"] == first.source_fingerprint
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["sources"]


def test_custom_adapter_from_a_module_outside_the_package(tmp_path, monkeypatch):
    package = tmp_path / "site" / "acme_feeds"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "reader.py").write_text(
        "import json\nimport pyarrow as pa\n\n"
        "class JsonLinesReader:\n"
        "    def read(self, config, base_dir):\n"
        "        rows = [json.loads(line) for line in (base_dir / 'log.jsonl').read_text().splitlines()]\n"
        "        events = pa.table({k: [r[k] for r in rows] for k in ('who', 'what', 'at')})\n"
        "        items = pa.table({'what': sorted({r['what'] for r in rows}), 'aisle': ['x', 'y']})\n"
        "        return {'interactions': events, 'items': items}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "log.jsonl").write_text('{"who": 7, "what": "a", "at": 100}\n{"who": 8, "what": "b", "at": 200}\n')
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: n\nmodel: m\nsource: data\nadapter: acme_feeds.reader:JsonLinesReader\n"
        "interactions: {path: log.jsonl, user_id: who, item_id: what, timestamp: {column: at}}\n"
        "items: {path: log.jsonl, id: what, attributes: {aisle: {kind: categorical}}}\n"
    )
    report = ingest(load_dataset_config(path), home_dir=tmp_path / "home")
    assert report.rows["interactions"] == 2 and report.rows["item_profile"] == 2
    assert "acme_feeds.reader" in sys.modules
    bad = path.read_text().replace("JsonLinesReader", "Nope")
    path.write_text(bad)
    with pytest.raises(ConfigError, match="key 'adapter'.*no class 'Nope'"):
        ingest(load_dataset_config(path), home_dir=tmp_path / "home2")


def test_latest_small_config_gives_todays_row_counts(tmp_path):
    from tower_platform.paths import bundled_config

    report = ingest(load_dataset_config(bundled_config()), home_dir=tmp_path)
    assert report.rows == {"interactions": 100_836, "item_profile": 9_742, "user_history": 85_046, "item_stats": 303_518}
    assert (report.first_event.isoformat(), report.last_event.isoformat()) == (
        "1996-03-29T18:36:55+00:00", "2018-09-24T14:27:30+00:00")
    profile = pq.read_table(tmp_path / "sources" / "item_profile.parquet").slice(0, 1).to_pylist()[0]
    assert profile["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert profile["category"] == "Adventure" and profile["release_year"] == 1995.0
    assert profile["display"] == "Toy Story (1995)"


@pytest.mark.skipif(not ML100K.is_dir(), reason=f"MovieLens-100K not found at {ML100K}")
def test_100k_config_gives_todays_row_counts_users_and_latin1_titles(tmp_path):
    from tower_platform.paths import bundled_config

    report = ingest(load_dataset_config(bundled_config("movielens-100k")), home_dir=tmp_path, source=ML100K)
    assert report.rows == {"interactions": 100_000, "item_profile": 1_682, "user_history": 49_439, "user_profile": 943,
                           "item_stats": 141_449}
    items = pq.read_table(tmp_path / "sources" / "item_profile.parquet")
    first = items.slice(0, 1).to_pylist()[0]
    assert first["genres"] == ["Animation", "Children's", "Comedy"] and first["release_year"] == 1995.0
    assert any("é" in t for t in items.column("display").to_pylist())  # Latin-1 decoded
    user = pq.read_table(tmp_path / "sources" / "user_profile.parquet").slice(0, 1).to_pylist()[0]
    assert {k: user[k] for k in ("user_id", "age", "gender", "occupation", "zip_prefix")} == {
        "user_id": "1", "age": 24.0, "gender": "M", "occupation": "technician", "zip_prefix": "857"}
