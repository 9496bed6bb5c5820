"""QdrantVectorStore on real qdrant-client (":memory:"), the server path's requests, and which backend opens."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tower_platform.errors import ConfigError, ConflictError, NotFoundError, UnavailableError
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


def _leave_old_local_storage(folder):
    """What qdrant-client's local storage (``QdrantClient(path=...)``) left in a $TOWER_HOME: meta.json and one sqlite
    file per collection (written by hand: the retired backend itself is not used any more)."""
    (folder / "collection" / "movies__v1").mkdir(parents=True)
    (folder / "collection" / "movies__v1" / "storage.sqlite").write_bytes(b"SQLite format 3\x00")
    (folder / "meta.json").write_text('{"collections": {"movies__v1": {}}, "aliases": {"movies": "movies__v1"}}')


def test_a_home_with_old_local_storage_is_refused_naming_the_folder_and_the_fix(tmp_path):
    _leave_old_local_storage(tmp_path / "qdrant")
    with pytest.raises(ConfigError) as refused:
        open_vector_store(Settings(home=tmp_path))
    message = str(refused.value)
    assert str(tmp_path.resolve() / "qdrant") in message and "towerctl embeddings write" in message
    assert refused.value.exit_code == 6
    assert not (tmp_path / "vectors").exists()  # nothing created beside it
    server = open_vector_store(Settings(home=tmp_path, qdrant=QdrantSettings(url="http://127.0.0.1:9")))
    assert server.kind == "remote"  # a server does not read the folder: no refusal
    server.close()


def test_the_cli_refuses_old_local_storage_with_exit_code_6(tmp_path, monkeypatch):
    from registry_support import migrated_home, register_placeholder_version
    from typer.testing import CliRunner

    from tower_platform.cli.main import app
    from tower_platform.registry.artifact import file_sha256
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.settings import get_settings

    monkeypatch.delenv("TOWER_QDRANT__URL", raising=False)
    settings = migrated_home(tmp_path / "home", monkeypatch)
    artifacts = {}
    for name in ("query.onnx", "item.onnx", "spec.json"):  # `embeddings status` reads none of them
        (tmp_path / name).write_text(name)
        artifacts[name] = (str(tmp_path / name), file_sha256(tmp_path / name))
    with SqlRegistryStore(settings.registry_url) as registry:
        register_placeholder_version(registry, artifacts=artifacts)
    _leave_old_local_storage(settings.home_dir / "qdrant")
    try:
        result = CliRunner().invoke(app, ["embeddings", "status", "movies"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 6, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "qdrant-client local storage" in line and "delete" in line


def test_unreachable_server_is_unavailable():
    store = QdrantVectorStore.remote("http://127.0.0.1:9", timeout_s=1)
    with pytest.raises(UnavailableError, match="127.0.0.1:9"):
        store.list_collections()
    store.close()


def test_open_vector_store_picks_server_or_the_embedded_engine_with_its_settings(tmp_path):
    from tower_platform.settings import EdgeSettings
    from tower_platform.vectors.edge import EdgeVectorStore
    from tower_platform.vectors.index import EdgeIndexConfig

    with open_vector_store(Settings(home=tmp_path)) as embedded:
        assert isinstance(embedded, EdgeVectorStore) and embedded.where == str(tmp_path.resolve() / "vectors")
        assert embedded.index == EdgeIndexConfig()  # nothing set: the engine's defaults
    tuned = Settings(home=tmp_path, edge=EdgeSettings(path=tmp_path / "elsewhere", ef=512, recall_floor=0.99))
    with open_vector_store(tuned) as embedded:
        assert embedded.where == str((tmp_path / "elsewhere").resolve())
        assert (embedded.index.ef, embedded.index.recall_floor, embedded.index.m) == (512, 0.99, EdgeIndexConfig().m)
    server = Settings(home=tmp_path, qdrant=QdrantSettings(url="http://127.0.0.1:9", shard_number=6,
                                                         replication_factor=2, quantization="int8"))
    remote = open_vector_store(server)
    assert remote.kind == "remote"
    assert (remote.collection.shard_number, remote.collection.replication_factor) == (6, 2)
    assert remote.collection.quantization == "int8" and remote.collection.write_consistency_factor is None
    remote.close()


def test_out_of_range_embedded_settings_are_a_config_error_naming_them(tmp_path):
    from tower_platform.settings import EdgeSettings

    with pytest.raises(ConfigError, match=r"TOWER_EDGE__\* settings.*m=2"):
        open_vector_store(Settings(home=tmp_path, edge=EdgeSettings(m=2)))


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


def test_memory_mode_ignores_what_only_a_server_does(store):
    store.create_collection("m__v1", dimension=4, bulk=True)  # no payload index, no optimizer settings
    store.finish_bulk_load("m__v1")
    assert store.collection_info("m__v1").point_count == 0
    assert store.check_index_recall("m__v1") is None  # no graph to measure: searched exactly
