"""QdrantVectorStore on real qdrant-client (":memory:" and local storage): ids, upserts, search, aliases, errors."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tower_platform.errors import ConflictError, NotFoundError, UnavailableError
from tower_platform.settings import QdrantSettings, Settings
from tower_platform.vectors.store import POINT_ID_NAMESPACE, QdrantVectorStore, open_vector_store, point_id


def _unit_rows(n: int, d: int, *, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)  # [n, d]
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def store():
    with QdrantVectorStore.memory() as vs:
        yield vs


def test_point_id_is_uuid5_of_item_id_and_stable():
    first = point_id("42")
    assert first == point_id("42")
    assert first == str(uuid.uuid5(POINT_ID_NAMESPACE, "42"))
    assert uuid.UUID(first).version == 5
    assert point_id("43") != first
    assert point_id(42) == first  # an int id and its string name the same item


def test_upsert_twice_keeps_one_point_per_item_and_the_latest_vector(store):
    store.create_collection("m__v1", dimension=4)
    ids = [f"i{k}" for k in range(10)]
    first = _unit_rows(10, 4, seed=1)
    second = _unit_rows(10, 4, seed=2)
    store.upsert("m__v1", ids, first, [{"category": "a"}] * 10)
    store.upsert("m__v1", ids, second, [{"category": "b"}] * 10)
    info = store.collection_info("m__v1")
    assert (info.point_count, info.dimension, info.distance) == (10, 4, "cosine")
    got = store.retrieve("m__v1", ["i3", "missing", "i7"])
    assert [p.item_id for p in got] == ["i3", "i7"]
    np.testing.assert_allclose(got[0].vector, second[3], atol=1e-6)
    assert got[1].payload == {"item_id": "i7", "category": "b"}


def test_upsert_rejects_misaligned_inputs(store):
    store.create_collection("m__v1", dimension=4)
    with pytest.raises(ConflictError, match="do not line up"):
        store.upsert("m__v1", ["a", "b"], _unit_rows(3, 4), [{}, {}])


def test_search_excludes_items_and_filters_by_category(store):
    store.create_collection("m__v1", dimension=4)
    vectors = _unit_rows(12, 4, seed=3)
    ids = [f"i{k}" for k in range(12)]
    store.upsert("m__v1", ids, vectors, [{"category": "even" if k % 2 == 0 else "odd"} for k in range(12)])
    top = store.search("m__v1", vectors[4], limit=3)
    assert top[0].item_id == "i4"  # a vector is its own nearest neighbour (cosine 1)
    assert top[0].score == pytest.approx(1.0, abs=1e-5)
    excluded = store.search("m__v1", vectors[4], limit=12, exclude_item_ids=["i4", "i5"])
    assert {h.item_id for h in excluded} == set(ids) - {"i4", "i5"}
    odd = store.search("m__v1", vectors[4], limit=12, category="odd")
    assert len(odd) == 6 and all(h.payload["category"] == "odd" for h in odd)
    scores = [h.score for h in excluded]
    assert scores == sorted(scores, reverse=True)


def test_swap_alias_moves_in_one_call_and_checks_the_previous_target(store):
    for version in (1, 2):
        store.create_collection(f"m__v{version}", dimension=4)
    calls = []
    real = store._client.update_collection_aliases

    def counting(**kwargs):
        calls.append(kwargs["change_aliases_operations"])
        return real(**kwargs)

    store._client.update_collection_aliases = counting
    store.swap_alias("m", "m__v1", previous=None)
    assert store.alias_target("m") == "m__v1"
    store.swap_alias("m", "m__v2", previous="m__v1")
    assert store.alias_target("m") == "m__v2"
    assert [len(ops) for ops in calls] == [1, 2]  # create; then delete + create in the same call

    with pytest.raises(ConflictError, match="m__v2"):
        store.swap_alias("m", "m__v1", previous="m__v1")  # someone else moved it meanwhile
    assert store.alias_target("m") == "m__v2"
    with pytest.raises(NotFoundError, match="m__v9"):
        store.swap_alias("m", "m__v9", previous="m__v2")
    assert store.alias_target("m") == "m__v2"
    assert store.alias_target("other") is None


def test_missing_collection_is_not_found(store):
    with pytest.raises(NotFoundError, match="nope"):
        store.collection_info("nope")
    with pytest.raises(NotFoundError, match="nope"):
        store.search("nope", np.ones(4, dtype=np.float32), limit=1)
    assert store.collection_exists("nope") is False


def test_local_storage_admits_one_opener_at_a_time(tmp_path):
    first = QdrantVectorStore.local(tmp_path / "qdrant")
    try:
        first.create_collection("m__v1", dimension=4)
        with pytest.raises(UnavailableError, match="held by another process"):
            QdrantVectorStore.local(tmp_path / "qdrant", lock_timeout_s=0.2)
    finally:
        first.close()
    with QdrantVectorStore.local(tmp_path / "qdrant", lock_timeout_s=0.2) as second:
        assert second.list_collections() == ["m__v1"]


def test_unreachable_server_is_unavailable():
    store = QdrantVectorStore.remote("http://127.0.0.1:9", timeout_s=1)
    with pytest.raises(UnavailableError, match="127.0.0.1:9"):
        store.list_collections()
    store.close()


def test_open_vector_store_picks_server_or_local_storage(tmp_path):
    local = open_vector_store(Settings(home=tmp_path))
    try:
        assert local.kind == "local" and local.where == str(tmp_path.resolve() / "qdrant")
    finally:
        local.close()
    remote = open_vector_store(Settings(home=tmp_path, qdrant=QdrantSettings(url="http://127.0.0.1:9")))
    assert remote.kind == "remote"
    remote.close()


class _RecordingServer:
    """Stands in for a Qdrant server's client: records the calls a bulk load makes (no server in unit tests)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def record(**kwargs):
            self.calls.append((name, kwargs))

        return record


def test_server_bulk_load_defers_indexing_then_restores_it_and_indexes_category():
    client = _RecordingServer()
    store = QdrantVectorStore(client, kind="remote", where="http://qdrant:6333")
    store.create_collection("m__v1", dimension=64, bulk=True)
    store.finish_bulk_load("m__v1")
    names = [name for name, _ in client.calls]
    assert names == ["create_collection", "create_payload_index", "update_collection"]
    assert client.calls[0][1]["optimizers_config"].indexing_threshold == 0
    assert client.calls[0][1]["vectors_config"].size == 64
    assert client.calls[1][1]["field_name"] == "category"
    assert client.calls[2][1]["optimizers_config"].indexing_threshold > 0


def test_local_storage_ignores_what_it_cannot_do(tmp_path):
    with QdrantVectorStore.local(tmp_path / "qdrant") as local:
        local.create_collection("m__v1", dimension=4, bulk=True)  # no payload index, no optimizer settings
        local.finish_bulk_load("m__v1")
        assert local.collection_info("m__v1").point_count == 0
