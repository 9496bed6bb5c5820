"""ONNX towers: parity with torch, string inputs as served, metadata, unusual values, input validation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from synthetic_interactions import ITEM_GENRES, ITEM_YEAR, N_RATINGS, RECENT, TOP_GENRE, corpus_table, feature_schema
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)
from synthetic_interactions import training_table

import towers.onnx.parity as export_module
from towers.onnx import ExportResult
from towers.training import TrainedTowers, fit_two_tower
from towers.config import TowerConfig
from towers.errors import TowersArtifactError
from towers.onnx import (
    ExportParityError,
    ServingContract,
    TowerFileMetadata,
    OnnxInputError,
    load_onnx_tower,
    table_to_onnx_inputs,
    unusual_rows,
)

CONFIG = TowerConfig().with_overrides({"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "epochs": 1, "batch_size": 256})


def _fit(config: TowerConfig) -> tuple[TrainedTowers, pa.Table, pa.Table]:
    train, corpus = training_table(n_users=60, per_user=10), corpus_table()
    return fit_two_tower(train, corpus=corpus, schema=feature_schema(), config=config, progress=False), train, corpus


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[TrainedTowers, ExportResult, pa.Table, pa.Table]:
    towers, train, corpus = _fit(CONFIG)
    out = tmp_path_factory.mktemp("onnx")
    serving = ServingContract(query_feature_service="movies_query", exclude_feature=RECENT).to_metadata()
    result = towers.export(
        out, model_name="movies", model_version=3, feature_service="movies_v1", sample=train.slice(0, 64),
        item_sample=corpus.slice(0, 64), extra_metadata={**serving, "model_name": "not this"},
    )
    return towers, result, train, corpus


def test_parity_on_real_rows_and_metadata(exported) -> None:
    towers, result, train, corpus = exported
    assert result.max_abs_diff <= 1e-5 and result.dimension == 8
    for path in (result.query_path, result.item_path):
        assert result.sha256s[path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
    query = load_onnx_tower(result.query_path)
    meta = query.metadata
    assert (meta["model_name"], meta["model_version"], meta["feature_service"]) == ("movies", "3", "movies_v1")
    assert meta["dimension"] == "8" and float(meta["temperature"]) == CONFIG.loss.temperature and meta["format_version"]
    assert json.loads(meta["schema"])["query"][0]["name"] == RECENT
    # the serving contract passed as extra metadata is in the file; extra keys never replace the contract's own
    assert query.info.serving.declared and query.info.serving.query_feature_service == "movies_query"
    assert query.info.serving.exclude_feature == RECENT
    inputs = {i["name"]: i for i in json.loads(meta["inputs"])}
    assert inputs[RECENT] == {"name": RECENT, "dtype": "string", "shape": ["batch", 8], "kind": "multi_categorical", "max_len": 8}
    assert inputs[N_RATINGS]["dtype"] == "float32" and inputs[TOP_GENRE]["shape"] == ["batch"]
    rows = train.slice(100, 200)
    assert np.abs(query.embed_table(rows) - towers.embed_queries(rows)).max() <= 1e-5
    item = load_onnx_tower(result.item_path)
    assert [i.name for i in item.info.inputs] == ["item_id", ITEM_GENRES, ITEM_YEAR]
    assert item.info.tower == "item" and item.info.dimension == 8 and query.info.temperature == CONFIG.loss.temperature
    assert np.abs(item.embed_table(corpus) - towers.embed_items(corpus)).max() <= 1e-5


def test_batch_of_one_and_unusual_values_give_unit_vectors(exported) -> None:
    towers, result, _, _ = exported
    for side, path in (("query", result.query_path), ("item", result.item_path)):
        tower = load_onnx_tower(path)
        rows = unusual_rows(towers.encoders.specs[side], towers.encoders)
        out = tower.embed_table(rows)
        assert np.isfinite(out).all() and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
        one = tower.embed_table(rows.slice(3, 1))
        assert one.shape == (1, 8) and np.abs(one - out[3:4]).max() <= 1e-5


def test_served_strings_go_through_the_graph(exported) -> None:
    towers, result, _, _ = exported
    query = load_onnx_tower(result.query_path)
    # the same row as served: "" for a missing category, NaN for a missing number, "" padding in lists
    feeds = {
        RECENT: np.array([["i1", "i2", "", "", "", "", "", ""]], dtype=object),
        N_RATINGS: np.array([np.nan], dtype=np.float32),
        TOP_GENRE: np.array([""], dtype=object),
    }
    row = pa.table({RECENT: pa.array([["i1", "i2"]]), N_RATINGS: pa.array([None], pa.float64()), TOP_GENRE: pa.array([None], pa.string())})
    assert np.abs(query.run(feeds) - towers.embed_queries(row)).max() <= 1e-5


def test_table_to_onnx_inputs_pads_truncates_and_fills() -> None:
    schema = feature_schema(recent_len=3)
    table = pa.table(
        {
            RECENT: pa.array([["a", "b", "c", "d"], None, [], ["x", None]], type=pa.list_(pa.string())),
            N_RATINGS: pa.array([1, None, 3, 4], type=pa.int64()),
            TOP_GENRE: pa.array(["Drama", None, "", "Comedy"]),
        }
    )
    feeds = table_to_onnx_inputs(table, schema.query)
    assert feeds[RECENT].tolist() == [["a", "b", "c"], ["", "", ""], ["", "", ""], ["x", "", ""]]
    assert feeds[N_RATINGS].dtype == np.float32 and np.isnan(feeds[N_RATINGS][1]) and feeds[N_RATINGS][2] == 3.0
    assert feeds[TOP_GENRE].tolist() == ["Drama", "", "", "Comedy"]


def test_missing_input_and_wrong_dtype_are_named(exported) -> None:
    _, result, train, _ = exported
    query = load_onnx_tower(result.query_path)
    feeds = table_to_onnx_inputs(train.slice(0, 4), feature_schema().query)
    with pytest.raises(OnnxInputError, match=f"needs input '{TOP_GENRE}' \\(string \\['batch'\\]\\)"):
        query.run({k: v for k, v in feeds.items() if k != TOP_GENRE})
    with pytest.raises(OnnxInputError, match=f"'{N_RATINGS}' must be float32"):
        query.run({**feeds, N_RATINGS: feeds[N_RATINGS].astype(np.float64)})
    with pytest.raises(OnnxInputError, match=f"'{TOP_GENRE}' must be string"):
        query.run({**feeds, TOP_GENRE: np.arange(4)})
    with pytest.raises(OnnxInputError, match=f"'{RECENT}' must have shape"):
        query.run({**feeds, RECENT: feeds[RECENT][:, :3]})
    with pytest.raises(OnnxInputError, match="no inputs \\['extra'\\]"):
        query.run({**feeds, "extra": np.zeros(4, np.float32)})


def test_parity_failure_raises_and_writes_nothing(exported, tmp_path, monkeypatch) -> None:
    towers, _, train, corpus = exported
    real = export_module._torch_embeddings

    def drifted(*args, **kwargs):
        return real(*args, **kwargs) + 1e-3

    monkeypatch.setattr(export_module, "_torch_embeddings", drifted)
    with pytest.raises(ExportParityError, match="query.onnx differs"):
        towers.export(tmp_path, model_name="m", model_version=1, feature_service="f", sample=train.slice(0, 8), item_sample=corpus)
    assert list(Path(tmp_path).iterdir()) == []


def test_hashed_oov_buckets_keep_parity(tmp_path) -> None:
    config = CONFIG.with_overrides({"hidden_dims": [], "oov_buckets": 4, "min_count": 3})
    towers, train, corpus = _fit(config)
    assert towers.encoders.vocabularies["item_id"].oov_buckets == 4
    result = towers.export(tmp_path, model_name="m", model_version=1, feature_service="f", sample=train.slice(0, 64), item_sample=corpus)
    assert result.max_abs_diff <= 1e-5
    item = load_onnx_tower(result.item_path)
    assert np.abs(item.embed_table(corpus) - towers.embed_items(corpus)).max() <= 1e-5


def test_loading_a_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(TowersArtifactError, match="nothing.onnx"):
        load_onnx_tower(tmp_path / "nothing.onnx")


def test_loading_verifies_the_sha256_recorded_at_export(exported, tmp_path) -> None:
    _, result, _, _ = exported
    digest = result.sha256s[result.query_path.name]
    assert load_onnx_tower(result.query_path, sha256=digest).info.tower == "query"
    altered = tmp_path / "query.onnx"
    altered.write_bytes(result.query_path.read_bytes() + b"\0")
    with pytest.raises(TowersArtifactError, match="does not match its recorded sha256"):
        load_onnx_tower(altered, sha256=digest)


def test_metadata_of_an_old_or_damaged_file_is_named() -> None:
    good = {"format_version": "1", "model_name": "m", "model_version": "2", "dimension": "8", "inputs": "[]"}
    assert TowerFileMetadata.parse(good, source="q.onnx").dimension == 8
    with pytest.raises(TowersArtifactError, match="q.onnx has tower format '0'"):
        TowerFileMetadata.parse({**good, "format_version": "0"}, source="q.onnx")
    with pytest.raises(TowersArtifactError, match="lacks metadata \\['dimension'\\]"):
        TowerFileMetadata.parse({k: v for k, v in good.items() if k != "dimension"}, source="q.onnx")
    with pytest.raises(TowersArtifactError, match="malformed metadata"):
        TowerFileMetadata.parse({**good, "inputs": "not json"}, source="q.onnx")
