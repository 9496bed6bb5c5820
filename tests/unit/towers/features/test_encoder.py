"""Encoders: vocabularies, shared groups, padding, numeric statistics, hashing, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from synthetic_interactions import ITEM_GENRES, ITEM_YEAR, N_RATINGS, RECENT, TOP_GENRE, feature_schema
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.config import TowerConfig
from towers.errors import MissingColumnError, TowersArtifactError
from towers.features.encoder import FeatureEncoders, NumericStats, Vocabulary, input_specs, murmurhash3_32


def test_vocabulary_min_count_order_and_id_layout() -> None:
    values = pa.array(["b", "a", "b", "c", "a", "b", None, "", "d"])
    vocab = Vocabulary.fit(values, group="g", min_count=2)
    # counts: b 3, a 2, c 1, d 1 -> kept b, a; ids: 0 missing, 1 OOV, b 2, a 3
    assert vocab.tokens == ["b", "a"]
    assert vocab.size == 4
    ids = vocab.lookup(pa.array(["a", "b", "c", None, "", "zzz"]))
    assert ids.tolist() == [3, 2, 1, 0, 0, 1]


def test_vocabulary_ties_break_by_token_and_max_size() -> None:
    vocab = Vocabulary.fit(pa.array(["y", "x", "z", "x", "y"]), group="g", max_size=2)
    assert vocab.tokens == ["x", "y"]  # x 2, y 2 (tie: alphabetical), z dropped by max_size


def test_murmurhash3_matches_reference_values() -> None:
    # reference MurmurHash3_x86_32 (seed 0): "" -> 0, "hello" -> 0x248BFA47 = 613153351
    hashes = murmurhash3_32(pa.array(["", "hello", "abcd", "abcde"]))
    assert hashes[:2].tolist() == [0, 613153351]
    assert hashes.dtype == np.uint32 and len(set(hashes.tolist())) == 4


def test_hashed_oov_buckets() -> None:
    vocab = Vocabulary.fit(pa.array(["a", "a"]), group="g", oov_buckets=8)
    unknown = pa.array([f"unknown-{i}" for i in range(64)])
    ids = vocab.lookup(unknown)
    assert ids.min() >= 1 and ids.max() <= 8  # OOV buckets 1..8
    assert len(set(ids.tolist())) > 4  # spread over buckets
    assert np.array_equal(ids, vocab.lookup(unknown))  # deterministic
    assert vocab.lookup(pa.array(["a", ""])).tolist() == [9, 0]


def _tables() -> tuple[pa.Table, FeatureEncoders]:
    table = pa.table(
        {
            "user_id": ["u1", "u2", "u3"],
            "item_id": ["i1", "i2", "i1"],
            RECENT: pa.array([["i2", "i3"], None, ["i1"] * 12], type=pa.list_(pa.string())),
            N_RATINGS: pa.array([1.0, None, 3.0]),
            TOP_GENRE: pa.array(["Drama", None, "Drama"]),
            ITEM_GENRES: pa.array([["Drama"], ["Comedy", "Drama"], []], type=pa.list_(pa.string())),
            ITEM_YEAR: pa.array([1990.0, float("nan"), 2000.0]),
        }
    )
    encoders = FeatureEncoders.fit(table, schema=feature_schema(recent_len=4), config=TowerConfig())
    return table, encoders


def test_shared_vocab_group_gives_one_vocabulary() -> None:
    table, encoders = _tables()
    specs = input_specs(feature_schema(), TowerConfig())
    assert specs["item"][0].name == "item_id" and specs["item"][0].vocab_group == "item_id"
    assert set(encoders.vocabularies) == {"item_id", "genre"}
    # item_id counts over the item id column and the recent lists: i1 14, i2 2, i3 1
    assert encoders.vocabularies["item_id"].tokens == ["i1", "i2", "i3"]
    items = encoders.encode(table, "item")["item_id"]
    recent = encoders.encode(table, "query")[RECENT]
    assert items.tolist() == [2, 3, 2]
    assert recent[0, :2].tolist() == [3, 4]  # i2, i3 with the same ids as on the item side


def test_multi_categorical_padding_truncation_and_null_lists() -> None:
    table, encoders = _tables()
    recent = encoders.encode(table, "query")[RECENT]
    assert recent.shape == (3, 4) and recent.dtype == np.int64
    assert recent.tolist() == [[3, 4, 0, 0], [0, 0, 0, 0], [2, 2, 2, 2]]


def test_numeric_statistics_use_finite_training_values() -> None:
    table, encoders = _tables()
    assert encoders.numeric[N_RATINGS] == NumericStats(mean=2.0, std=1.0)
    assert encoders.numeric[ITEM_YEAR] == NumericStats(mean=1995.0, std=5.0)
    values = encoders.encode(table, "query")[N_RATINGS]
    assert values.dtype == np.float32 and np.isnan(values[1]) and values[0] == 1.0
    assert NumericStats.fit(np.array([np.nan, np.inf])) == NumericStats(mean=0.0, std=1.0)


def test_serialisation_round_trip() -> None:
    table, encoders = _tables()
    data = json.loads(json.dumps(encoders.to_dict()))
    restored = FeatureEncoders.from_dict(data)
    for side in ("query", "item"):
        a, b = encoders.encode(table, side), restored.encode(table, side)
        assert a.keys() == b.keys()
        for name in a:
            assert np.array_equal(a[name], b[name], equal_nan=a[name].dtype.kind == "f")
    with pytest.raises(TowersArtifactError, match="format"):
        FeatureEncoders.from_dict({**data, "format": 99})


def test_missing_column_is_named() -> None:
    table, encoders = _tables()
    with pytest.raises(MissingColumnError, match=RECENT):
        encoders.encode(table.drop_columns([RECENT]), "query")


def test_sliced_and_chunked_tables_encode_like_the_whole() -> None:
    table, encoders = _tables()
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 2)])  # two chunks per column
    for side in ("query", "item"):
        whole = encoders.encode(table, side)
        part = encoders.encode(table.slice(1, 2), side)
        again = encoders.encode(chunked, side)
        for name in whole:
            nan = whole[name].dtype.kind == "f"
            assert np.array_equal(part[name], whole[name][1:], equal_nan=nan)
            assert np.array_equal(again[name], whole[name], equal_nan=nan)
    words = pa.array(["zero", "hello", "abcde"])
    assert np.array_equal(murmurhash3_32(words.slice(1)), murmurhash3_32(words)[1:])
