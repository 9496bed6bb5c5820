"""Fuzzing bad input with Hypothesis: generated tables (wrong types, extreme and missing values, odd encodings: BOM,
UTF-16, Latin-1 bytes read as UTF-8) and generated dataset configs. Whatever comes in, ingestion and config loading
either succeed or raise one error of the hierarchy with a one-sentence message naming the config, never another
exception, and a failed ingest leaves $TOWER_HOME byte for byte as it was.

The examples are bounded (a few dozen per property) and derandomized: the same inputs on every run and in CI.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tower_platform.datasets import ingest, load_dataset_config
from tower_platform.errors import TowerError

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

GOOD_EVENTS = [("u1", "i1", "1000"), ("u2", "i2", "2000"), ("u1", "i2", "3000")]
GOOD_ITEMS = [("i1", "a", "1.5"), ("i2", "b", "2")]

# Cell values a file may hold where an id, a timestamp or a number is expected.
cells = st.one_of(
    st.sampled_from(["", " ", "NaN", "nan", "inf", "-inf", "null", "None", "1e309", "99999999999999", "-99999999999999",
                     "9223372036854775808", "0", "-1", "1.5", "2024-01-02", "2024-13-45", "2024-01-02T10:00:00Z",
                     "12/31/2024 23:59", "true", "é", "\u00a0", "\u200b", "a,b", '"', "\ufeff", "x" * 300]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
rows = st.lists(st.tuples(cells, cells, cells), min_size=0, max_size=8)
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"])
time_formats = st.sampled_from(["epoch_s", "epoch_ms", "iso8601", "date", "%d/%m/%Y %H:%M"])


def _csv_bytes(header: tuple[str, ...], body: list[tuple[str, ...]], encoding: str) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    return buffer.getvalue().encode(encoding, errors="replace")


def _config_text(*, fmt: str, declared_encoding: str, items_format: str = "csv", numeric: bool = True) -> str:
    config = {
        "name": "fuzz",
        "model": "fuzz",
        "source": "data",
        "interactions": {"path": "events.csv", "user_id": "u", "item_id": "i", "encoding": declared_encoding,
                         "timestamp": {"column": "t", "format": fmt}},
        "items": {"path": "items.parquet" if items_format == "parquet" else "items.csv", "id": "i",
                  "attributes": {"shelf": {"kind": "categorical"},
                                 **({"weight": {"kind": "numeric", "column": "w"}} if numeric else {})}},
    }
    return yaml.safe_dump(config, sort_keys=False)


def _snapshot(home: Path) -> dict[str, str]:
    """Every file under the home with the sha256 of its bytes (folders as empty entries)."""
    if not home.exists():
        return {}
    return {str(p.relative_to(home)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "")
            for p in sorted(home.rglob("*"))}


def _check_failure(exc: BaseException, config_path: Path) -> None:
    assert isinstance(exc, TowerError), f"{type(exc).__name__}: {exc}"  # never a traceback at the CLI edge
    message = str(exc)
    assert "\n" not in message and message.endswith("."), message
    assert str(config_path) in message, message
    assert exc.exit_code in (2, 3, 6), message


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A folder with a good dataset and a home that holds its ingested sources (what a failed ingest must keep)."""
    root = tmp_path_factory.mktemp("fuzz-base")
    data = root / "data"
    data.mkdir()
    (data / "events.csv").write_bytes(_csv_bytes(("u", "i", "t"), GOOD_EVENTS, "utf-8"))
    (data / "items.csv").write_bytes(_csv_bytes(("i", "shelf", "w"), GOOD_ITEMS, "utf-8"))
    (root / "fuzz.yaml").write_text(_config_text(fmt="epoch_s", declared_encoding="utf8"), encoding="utf-8")
    ingest(load_dataset_config(root / "fuzz.yaml"), home_dir=root / "home")
    return root


def _workspace(base: Path) -> Path:
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    shutil.copytree(base, work, dirs_exist_ok=True)
    return work


def _ingest_and_check(work: Path) -> None:
    home = work / "home"
    before = _snapshot(home)
    config_path = work / "fuzz.yaml"
    try:
        report = ingest(load_dataset_config(config_path), home_dir=home)
    except BaseException as exc:  # noqa: BLE001 - the property is about what is raised
        _check_failure(exc, config_path)
        assert _snapshot(home) == before, "a failed ingest changed $TOWER_HOME"
        return
    assert report.rows["interactions"] >= 1
    assert not [p.name for p in home.iterdir() if p.name.startswith(".")]  # no staging leftovers


@FUZZ
@given(body=rows, encoding=encodings, declared=st.sampled_from(["utf8", "utf-16", "latin1"]), fmt=time_formats,
       bom_header=st.booleans())
def test_generated_interaction_files_never_raise_anything_else(base, body, encoding, declared, fmt, bom_header):
    work = _workspace(base)
    try:
        header = ("\ufeffu" if bom_header else "u", "i", "t")
        (work / "data" / "events.csv").write_bytes(_csv_bytes(header, body, encoding))
        (work / "fuzz.yaml").write_text(_config_text(fmt=fmt, declared_encoding=declared), encoding="utf-8")
        _ingest_and_check(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@FUZZ
@given(raw=st.binary(max_size=200), declared=st.sampled_from(["utf8", "latin1"]))
def test_arbitrary_bytes_as_the_interactions_file(base, raw, declared):
    work = _workspace(base)
    try:
        (work / "data" / "events.csv").write_bytes(raw)
        (work / "fuzz.yaml").write_text(_config_text(fmt="epoch_s", declared_encoding=declared), encoding="utf-8")
        _ingest_and_check(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


arrow_columns = st.sampled_from([
    pa.array(["i1", "i2"]),
    pa.array([1, 2], pa.int64()),
    pa.array([1.5, float("nan")]),
    pa.array([None, None], pa.string()),
    pa.array([True, False]),
    pa.array([[1], [2, 3]], pa.list_(pa.int64())),
    pa.array([b"\xff\xfe", b"\x00"], pa.binary()),
    pa.array([0, 2**62], pa.int64()).cast(pa.timestamp("ns")),
    pa.array([{"a": 1}, {"a": 2}], pa.struct([("a", pa.int64())])),
])


@FUZZ
@given(ids=arrow_columns, shelf=arrow_columns, weight=arrow_columns)
def test_generated_parquet_item_tables_with_wrong_types(base, ids, shelf, weight):
    work = _workspace(base)
    try:
        pq.write_table(pa.table({"i": ids, "shelf": shelf, "w": weight}), work / "data" / "items.parquet")
        (work / "fuzz.yaml").write_text(_config_text(fmt="epoch_s", declared_encoding="utf8", items_format="parquet"),
                                        encoding="utf-8")
        _ingest_and_check(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# Configs: the good one with keys removed, replaced or added, values of every YAML type.
yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=6,
)
KEY_PATHS = [("name",), ("model",), ("source",), ("adapter",), ("interactions",), ("interactions", "path"),
             ("interactions", "timestamp"), ("interactions", "timestamp", "format"), ("interactions", "weight"),
             ("interactions", "filter"), ("items", "attributes"), ("items", "attributes", "shelf", "kind"),
             ("items", "category"), ("features",), ("features", "query"), ("split",), ("split", "test_quantile"),
             ("training",), ("unknown_key",), ("items", "missing")]


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(edits=st.lists(st.tuples(st.sampled_from(KEY_PATHS), st.one_of(st.just("<delete>"), yaml_values)), max_size=3),
       as_text=st.one_of(st.none(), st.binary(max_size=60)))
def test_generated_configs_load_or_fail_with_one_sentence(base, edits, as_text):
    config = yaml.safe_load(_config_text(fmt="epoch_s", declared_encoding="utf8"))
    for path, value in edits:
        node = config
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if value == "<delete>":
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    with tempfile.TemporaryDirectory() as folder:
        config_path = Path(folder) / "fuzz.yaml"
        if as_text is None:
            config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        else:
            config_path.write_bytes(as_text)  # not even YAML, or not UTF-8
        try:
            load_dataset_config(config_path)
        except BaseException as exc:  # noqa: BLE001
            _check_failure(exc, config_path)


# Derived features over generated values: extreme ratings and times anywhere in the range the store holds.
DERIVED = {
    "interactions": {"rating": "r", "values": {"qty": "q"}, "weight": {"column": "q", "divide_by": 2}},
    "features": {"query": {"recent": {"type": "recent_items", "length": 3},
                           "n_7d": {"type": "count", "window_days": 7},
                           "mean_r": {"type": "mean", "column": "rating"},
                           "since": {"type": "time_since_previous", "unit": "hours"},
                           "first": {"type": "days_since_first"}},
                 "item": {"trending": {"type": "count", "window_days": 1}, "age": {"type": "days_since_first"},
                          "mean_q": {"type": "mean", "column": "qty"}}},
}
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr),
                    st.sampled_from(["", "1e308", "-1e308", "5", "0", "x"]))
times = st.one_of(st.integers(min_value=-9_223_200_000, max_value=9_223_200_000),
                  st.sampled_from([0, 1, 86_399, 86_400, 9_223_200_000, -9_223_200_000]))


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(events=st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.sampled_from(["i1", "i2", "i9"]), times,
                                 numbers, numbers), min_size=1, max_size=10))
def test_derived_features_over_extreme_values(base, events):
    work = _workspace(base)
    try:
        body = [(u, i, str(t), r, q) for u, i, t, r, q in events]
        (work / "data" / "events.csv").write_bytes(_csv_bytes(("u", "i", "t", "r", "q"), body, "utf-8"))
        config = yaml.safe_load(_config_text(fmt="epoch_s", declared_encoding="utf8"))
        config["interactions"].update(DERIVED["interactions"])
        config["features"] = DERIVED["features"]
        (work / "fuzz.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        _ingest_and_check(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
