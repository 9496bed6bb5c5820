"""The vector-store behaviour both backends share (qdrant-edge shards, and the server API through qdrant-client's
in-memory mode), then what only the embedded engine has: HNSW with a recall check, alias pointer files, shard locks."""

from __future__ import annotations

import numpy as np
import pytest

from tower_platform.errors import ConflictError, NotFoundError, TowerError, UnavailableError, UsageError
from tower_platform.vectors.edge import EdgeVectorStore
from tower_platform.vectors.shard import fast_point_id
from tower_platform.vectors.index import EdgeIndexConfig, RecallBelowFloorError, check_recall, measure_recall
from tower_platform.vectors.store import QdrantVectorStore, point_id


def _unit_rows(n: int, d: int, *, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)  # [n, d]
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _clustered_rows(n: int, d: int, *, clusters: int, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)  # [C, d]
    rows = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d)).astype(np.float32)  # [n, d]
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(params=["edge", "server-api"])
def store(request, tmp_path):
    opened = EdgeVectorStore(tmp_path / "vectors") if request.param == "edge" else QdrantVectorStore.memory()
    with opened as vs:
        yield vs


def _write(store, name: str, vectors: np.ndarray, *, categories: int = 2) -> list[str]:
    ids = [f"i{k}" for k in range(len(vectors))]
    store.create_collection(name, dimension=vectors.shape[1])
    store.upsert(name, ids, vectors, [{"category": f"c{k % categories}"} for k in range(len(ids))])
    store.finish_bulk_load(name)
    return ids


# -- shared behaviour ---------------------------------------------------------------------------------------------
def test_create_and_upsert_twice_keeps_one_point_per_item_with_the_latest_vector(store):
    store.create_collection("m__v1", dimension=4)
    assert store.collection_exists("m__v1") and not store.collection_exists("m__v2")
    assert store.list_collections() == ["m__v1"]
    ids = [f"i{k}" for k in range(10)]
    first, second = _unit_rows(10, 4, seed=1), _unit_rows(10, 4, seed=2)
    store.upsert("m__v1", ids, first, [{"category": "a"}] * 10)
    store.upsert("m__v1", ids, second, [{"category": "b"}] * 10)
    info = store.collection_info("m__v1")
    assert (info.point_count, info.dimension, info.distance) == (10, 4, "cosine")
    got = store.retrieve("m__v1", ["i7", "missing", "i3"])
    assert [p.item_id for p in got] == ["i7", "i3"]  # the order asked, missing ones absent
    np.testing.assert_allclose(got[1].vector, second[3], atol=1e-6)
    assert got[0].payload == {"item_id": "i7", "category": "b"}
    assert store.retrieve("m__v1", ["i1"], with_vectors=False)[0].vector is None
    assert store.existing_ids("m__v1", ["i0", "i9", "nope"]) == {"i0", "i9"}


def test_create_twice_and_bad_input_raise_clear_errors(store):
    store.create_collection("m__v1", dimension=4)
    expected = ConflictError if isinstance(store, EdgeVectorStore) else TowerError  # qdrant-client: UnavailableError
    with pytest.raises(expected, match="m__v1"):
        store.create_collection("m__v1", dimension=4)
    with pytest.raises(ConflictError, match="do not line up"):
        store.upsert("m__v1", ["a", "b"], _unit_rows(3, 4), [{}, {}])
    with pytest.raises(ConflictError, match="distance"):
        store.create_collection("m__v2", dimension=4, distance="hamming")
    with pytest.raises(NotFoundError, match="m__v9"):
        store.search("m__v9", _unit_rows(1, 4)[0], limit=3)


def test_scroll_yields_every_point_once_in_pages(store):
    ids = _write(store, "m__v1", _unit_rows(25, 4, seed=4))
    pages = list(store.scroll("m__v1", batch_size=10))
    assert [len(p) for p in pages] == [10, 10, 5]
    seen = [p.item_id for page in pages for p in page]
    assert sorted(seen) == sorted(ids)
    assert all(p.vector is not None and p.vector.shape == (4,) for page in pages for p in page)


def test_search_orders_by_cosine_score_filters_category_and_excludes_history(store):
    vectors = _unit_rows(12, 4, seed=3)
    ids = _write(store, "m__v1", vectors)  # category c0 for even k, c1 for odd k
    query = vectors[0]
    expected = np.argsort(-(vectors @ query), kind="stable")  # cosine of unit rows = dot product
    hits = store.search("m__v1", query, limit=5)
    assert [h.item_id for h in hits] == [ids[k] for k in expected[:5]]
    assert hits[0].item_id == "i0" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    np.testing.assert_allclose([h.score for h in hits], (vectors @ query)[expected[:5]], atol=1e-5)

    excluded = ["i0", ids[expected[1]]]
    hits = store.search("m__v1", query, limit=5, exclude_item_ids=excluded)
    assert [h.item_id for h in hits] == [ids[k] for k in expected if ids[k] not in excluded][:5]

    odd = store.search("m__v1", query, limit=20, category="c1")
    assert [h.item_id for h in odd] == [ids[k] for k in expected if k % 2 == 1]  # all six odd items, in order
    assert {h.payload["category"] for h in odd} == {"c1"}
    both = store.search("m__v1", query, limit=20, category="c0", exclude_item_ids=["i0", "i2"])
    assert [h.item_id for h in both] == [ids[k] for k in expected if k % 2 == 0 and k not in (0, 2)]


def test_alias_swap_checks_the_previous_target_and_search_follows_it(store):
    first = _write(store, "m__v1", _unit_rows(6, 4, seed=5))
    _write(store, "m__v2", _unit_rows(6, 4, seed=6))
    assert store.alias_target("m") is None and store.aliases() == {}
    store.swap_alias("m", "m__v1", previous=None)
    assert store.alias_target("m") == "m__v1"
    assert store.search("m", _unit_rows(6, 4, seed=5)[2], limit=1)[0].item_id == first[2]
    with pytest.raises(ConflictError, match="m__v1"):
        store.swap_alias("m", "m__v2", previous=None)  # someone else moved it meanwhile
    assert store.alias_target("m") == "m__v1"
    with pytest.raises(NotFoundError, match="m__v7"):
        store.swap_alias("m", "m__v7", previous="m__v1")
    store.swap_alias("m", "m__v2", previous="m__v1")
    assert store.aliases() == {"m": "m__v2"}
    store.delete_alias("m")
    assert store.alias_target("m") is None
    with pytest.raises(NotFoundError):
        store.search("m", _unit_rows(1, 4)[0], limit=1)


def test_delete_collection_removes_it(store):
    _write(store, "m__v1", _unit_rows(5, 4))
    _write(store, "m__v2", _unit_rows(5, 4))
    store.delete_collection("m__v1")
    assert store.list_collections() == ["m__v2"]
    assert not store.collection_exists("m__v1")
    with pytest.raises(NotFoundError):
        store.retrieve("m__v1", ["i0"])


# -- the embedded engine only -------------------------------------------------------------------------------------
def test_edge_collections_and_aliases_survive_reopening(tmp_path):
    vectors = _unit_rows(30, 8, seed=7)
    with EdgeVectorStore(tmp_path) as store:
        ids = _write(store, "m__v1", vectors)
        store.swap_alias("m", "m__v1", previous=None)
    with EdgeVectorStore(tmp_path) as store:
        assert store.collection_info("m__v1").point_count == 30
        assert store.alias_target("m") == "m__v1"
        assert store.search("m", vectors[11], limit=1)[0].item_id == ids[11]
        np.testing.assert_allclose(store.retrieve("m__v1", ["i4"])[0].vector, vectors[4], atol=1e-6)


def test_edge_alias_pointer_is_replaced_without_leftovers(tmp_path):
    with EdgeVectorStore(tmp_path) as store:
        _write(store, "m__v1", _unit_rows(4, 4))
        _write(store, "m__v2", _unit_rows(4, 4))
        store.swap_alias("m", "m__v1", previous=None)
        store.swap_alias("m", "m__v2", previous="m__v1")
    folder = tmp_path / "aliases"
    assert sorted(p.name for p in folder.iterdir() if p.name != ".lock") == ["m"]  # no temporary file left
    assert (folder / "m").read_text() == "m__v2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aliases", "m__v1", "m__v2"]  # no half-created shard


def test_edge_deleting_a_collection_drops_the_aliases_pointing_to_it(tmp_path):
    with EdgeVectorStore(tmp_path) as store:
        _write(store, "m__v1", _unit_rows(4, 4))
        store.swap_alias("m", "m__v1", previous=None)
        store.delete_collection("m__v1")
        assert store.aliases() == {}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["aliases"]


def test_edge_rejects_names_that_are_not_file_names(tmp_path):
    with EdgeVectorStore(tmp_path) as store:
        for bad in ("../escape", "a/b", ".hidden", "aliases", ""):
            with pytest.raises(UsageError, match="name"):
                store.create_collection(bad, dimension=4)


def test_edge_shard_held_by_another_opener_is_unavailable_naming_the_folder(tmp_path):
    with EdgeVectorStore(tmp_path) as first:
        _write(first, "m__v1", _unit_rows(4, 4))
        first.collection_info("m__v1")  # opens the shard and keeps it
        with EdgeVectorStore(tmp_path, lock_timeout_s=0.0) as second:
            with pytest.raises(UnavailableError, match=r"m__v1 is held by another process"):
                second.search("m__v1", _unit_rows(1, 4)[0], limit=1)
    with EdgeVectorStore(tmp_path, lock_timeout_s=0.0) as third:  # released on close
        assert third.collection_info("m__v1").point_count == 4


def test_edge_closed_store_refuses_work(tmp_path):
    store = EdgeVectorStore(tmp_path)
    _write(store, "m__v1", _unit_rows(4, 4))
    store.close()
    with pytest.raises(UnavailableError, match="closed"):
        store.search("m__v1", _unit_rows(1, 4)[0], limit=1)


def test_edge_builds_a_graph_above_exact_below_and_measures_its_recall(tmp_path):
    # 3,000 clustered points, exact_below=1,000: finish_bulk_load builds HNSW; at ef=200 (2x k) the graph finds
    # (nearly) all of the exact top-20, while ef=1 with m=4 misses most of them on loose clusters.
    vectors = _clustered_rows(3000, 16, clusters=30, noise=0.6, seed=8)
    generous = EdgeIndexConfig(exact_below=1000, m=16, ef_construct=64, ef=200, recall_queries=40)
    with EdgeVectorStore(tmp_path, index=generous) as store:
        ids = _write(store, "m__v1", vectors, categories=5)
        assert store.indexed_count("m__v1") == 3000
        assert measure_recall(store, "m__v1", k=20) >= 0.95
        assert check_recall(store, "m__v1", k=20) >= 0.95
        hits = store.search("m__v1", vectors[5], limit=10, category="c0", exclude_item_ids=["i5"])
        assert hits and all(h.payload["category"] == "c0" and h.item_id != "i5" for h in hits)
        assert ids[5] not in {h.item_id for h in hits}
    starved = EdgeIndexConfig(exact_below=1000, m=4, ef_construct=4, ef=1, recall_queries=40)
    with EdgeVectorStore(tmp_path / "low", index=starved) as store:
        _write(store, "m__v1", vectors)
        with pytest.raises(RecallBelowFloorError, match=r"recall@100.*ef=1, m=4, ef_construct=4; raise ef"):
            check_recall(store, "m__v1", floor=0.999)


def test_edge_below_exact_below_stays_exact(tmp_path):
    vectors = _unit_rows(200, 8, seed=9)
    with EdgeVectorStore(tmp_path, index=EdgeIndexConfig(exact_below=1000, ef=1)) as store:
        _write(store, "m__v1", vectors)
        assert store.indexed_count("m__v1") == 0
        assert measure_recall(store, "m__v1", queries=20, k=50) == 1.0


def test_edge_index_config_rejects_out_of_range_settings():
    with pytest.raises(ConflictError, match="m=2"):
        EdgeIndexConfig(m=2)
    with pytest.raises(ConflictError, match="recall_floor"):
        EdgeIndexConfig(recall_floor=1.5)


def test_edge_point_ids_equal_the_shared_uuid5_ids():
    for item_id in ("42", 42, "tt0111161", "é-ü", ""):
        assert fast_point_id(item_id) == point_id(item_id)


def test_edge_samples_distinct_stored_vectors(tmp_path):
    vectors = _unit_rows(50, 4, seed=10)
    with EdgeVectorStore(tmp_path) as store:
        _write(store, "m__v1", vectors)
        sample = store.sample_vectors("m__v1", 20, seed=1)  # [20, 4]
        assert sample.shape == (20, 4)
        nearest = np.argmax(sample @ vectors.T, axis=1)  # each sampled row is one stored row
        np.testing.assert_allclose(sample, vectors[nearest], atol=1e-6)
        assert len(set(nearest.tolist())) == 20
        assert store.sample_vectors("m__v1", 500).shape == (50, 4)  # at most every point
