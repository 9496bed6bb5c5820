"""The server path's requests: what qdrant-client sends a Qdrant server or cluster when the writer creates and fills a
collection, recorded at the HTTP transport (no server runs here: real qdrant-client serialises real REST requests,
an ``httpx.MockTransport`` records them and answers as Qdrant does)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pyarrow as pa
import pytest

from reference_tower import ReferenceFeature, build_reference_tower
from tower_platform.errors import ConfigError
from tower_platform.settings import Settings, get_settings
from tower_platform.vectors.server_collection import ServerCollectionConfig
from tower_platform.vectors.store import QdrantVectorStore, open_vector_store
from tower_platform.vectors.writer import QdrantEmbeddingWriter

N_ITEMS = 30
URL = "http://qdrant-0:6333"


class RecordingQdrant:
    """An httpx transport that records every request and answers like an empty Qdrant server."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict | None, str | None]] = []  # method, path, JSON body, api-key

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body, request.headers.get("api-key")))
        if request.url.path.endswith("/exists"):
            result: object = {"exists": False}
        elif request.url.path.endswith(("/index", "/points")):
            result = {"operation_id": len(self.requests), "status": "completed"}
        else:
            result = True
        return httpx.Response(200, json={"result": result, "status": "ok", "time": 0.0})

    def calls(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _, _ in self.requests]

    def body(self, method: str, path: str) -> dict:
        return next(b for m, p, b, _ in self.requests if (m, p) == (method, path))


def _corpus() -> pa.Table:
    idx = np.arange(N_ITEMS)
    return pa.table({
        "item_id": pa.array([f"m{k}" for k in idx]),
        "item_profile__category": pa.array([("Drama", "Comedy")[k % 2] for k in idx]),
        "item_stats__interaction_count": pa.array(idx.astype(np.float64)),
    })


@pytest.fixture
def tower(tmp_path):
    return build_reference_tower(
        tmp_path / "item.onnx",
        features=[ReferenceFeature("item_id", "categorical", tuple(f"m{k}" for k in range(N_ITEMS))),
                  ReferenceFeature("item_stats__interaction_count", "numeric")],
        dimension=8, model_name="movies", model_version=1,
        schema={"item_id": "item_id", "item_category": "item_profile__category"},
    )


def _write(tower, layout: ServerCollectionConfig) -> RecordingQdrant:
    server = RecordingQdrant()
    with pytest.warns(UserWarning, match="insecure"):  # qdrant-client warns of an API key over plain http
        store = QdrantVectorStore.remote(URL, "cluster-key", collection=layout, transport=httpx.MockTransport(server))
    with store:
        QdrantEmbeddingWriter(store, tower, batch_size=16, progress=False).write(_corpus())
    return server


def test_the_writer_creates_a_cluster_collection_with_the_configured_layout(tower):
    layout = ServerCollectionConfig(shard_number=6, replication_factor=2, write_consistency_factor=2, on_disk=True,
                                    quantization="int8", quantile=0.99)
    server = _write(tower, layout)
    collection = "/collections/movies__v1"
    assert server.calls() == [
        ("GET", f"{collection}/exists"),  # a new version: nothing to resume
        ("PUT", collection),  # create, with the layout
        ("PUT", f"{collection}/index"),  # keyword index on the category (filtered search)
        ("PUT", f"{collection}/points"),  # 30 items in batches of 16: two upserts
        ("PUT", f"{collection}/points"),
        ("PATCH", collection),  # the bulk load is over: indexing restored
    ]
    created = server.body("PUT", collection)
    assert created["shard_number"] == 6 and created["replication_factor"] == 2
    assert created["write_consistency_factor"] == 2
    assert created["vectors"] == {"size": 8, "distance": "Cosine", "on_disk": True}
    assert created["quantization_config"] == {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}
    assert created["optimizers_config"] == {"indexing_threshold": 0}  # no graph while bulk loading
    assert server.body("PUT", f"{collection}/index") == {"field_name": "category", "field_schema": "keyword"}
    assert server.body("PATCH", collection)["optimizers_config"]["indexing_threshold"] > 0
    assert {key for *_, key in server.requests} == {"cluster-key"}  # every request carries the API key
    upserted = [b for m, p, b, _ in server.requests if p.endswith("/points")]
    assert sum(len(b["batch"]["ids"]) for b in upserted) == N_ITEMS


def test_without_a_layout_the_server_keeps_its_own_defaults(tower):
    server = _write(tower, ServerCollectionConfig())
    created = server.body("PUT", "/collections/movies__v1")
    assert set(created) == {"vectors", "optimizers_config"}  # no shard, replica, consistency or quantisation keys
    assert created["vectors"] == {"size": 8, "distance": "Cosine"}


def test_the_layout_comes_from_the_environment(monkeypatch, tmp_path):
    for name, value in {"URL": "https://qdrant-0:6333", "API_KEY": "k", "SHARD_NUMBER": "3", "REPLICATION_FACTOR": "2",
                        "WRITE_CONSISTENCY_FACTOR": "1", "ON_DISK": "true", "QUANTIZATION": "int8"}.items():
        monkeypatch.setenv(f"TOWER_QDRANT__{name}", value)
    monkeypatch.setenv("TOWER_HOME", str(tmp_path))
    with open_vector_store(Settings()) as store:
        assert store.kind == "remote"
        assert store.collection == ServerCollectionConfig(shard_number=3, replication_factor=2,
                                                          write_consistency_factor=1, on_disk=True,
                                                          quantization="int8")


def test_impossible_layouts_are_config_errors_naming_the_setting(monkeypatch):
    with pytest.raises(ConfigError, match="write_consistency_factor=3 exceeds replication_factor=2"):
        ServerCollectionConfig(replication_factor=2, write_consistency_factor=3)
    with pytest.raises(ConfigError, match="quantization='pq'"):
        ServerCollectionConfig(quantization="pq")
    with pytest.raises(ConfigError, match="shard_number=0"):
        ServerCollectionConfig(shard_number=0)
    monkeypatch.setenv("TOWER_QDRANT__SHARD_NUMBER", "six")
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match="TOWER_QDRANT__SHARD_NUMBER='six' is invalid"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_compose_offers_a_single_server_and_a_three_node_cluster_keyed_from_the_environment():
    from pathlib import Path

    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parents[4] / "ops" / "compose.yaml").read_text())
    services = compose["services"]
    nodes = {name: s for name, s in services.items() if name.startswith("qdrant-node-")}
    assert sorted(nodes) == ["qdrant-node-0", "qdrant-node-1", "qdrant-node-2"]
    assert services["qdrant"]["profiles"] == ["single"] and "profiles" not in services["postgres"]
    for name, node in nodes.items():
        assert node["profiles"] == ["cluster"] and node["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        assert node["command"][:3] == ["./qdrant", "--uri", f"http://{name}:6335"]
        assert not any(str(p).endswith(":6335") for p in node.get("ports", []))  # peer port never published
    assert "--bootstrap" not in nodes["qdrant-node-0"]["command"]
    assert all(n["command"][3:] == ["--bootstrap", "http://qdrant-node-0:6335"]
               for name, n in nodes.items() if name != "qdrant-node-0")
    for service in (services["qdrant"], *nodes.values()):  # the key comes from the environment, with no default
        assert service["environment"]["QDRANT__SERVICE__API_KEY"].startswith("${TOWER_QDRANT__API_KEY:?")
