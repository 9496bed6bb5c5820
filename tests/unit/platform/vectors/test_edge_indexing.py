"""The embedded default end to end: the writer builds the HNSW graph, verification measures its recall against exact
search and refuses to mark a version indexed below the floor (naming the figure and the settings to raise), the
settings come from ``TOWER_EDGE__*``, collections are read back page by page, killed runs leave nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from reference_tower import ReferenceFeature, build_reference_tower
from registry_support import migrated_home, register_placeholder_version
from tower_platform.errors import ConflictError
from tower_platform.registry.artifact import file_sha256
from tower_platform.vectors.edge import EdgeVectorStore
from tower_platform.vectors.index import EdgeIndexConfig, RecallBelowFloorError
from tower_platform.vectors.reading import read_collection
from tower_platform.vectors.shard import CREATING_PREFIX, DELETING_PREFIX
from tower_platform.vectors.store import QdrantVectorStore
from tower_platform.vectors.writer import QdrantEmbeddingWriter, StaticItemSource, verify_collection

N_ITEMS = 3000
DIM = 16


def _clustered_table(seed: int = 0) -> np.ndarray:
    """[N + 1, D] item-id embedding table (row 0: unknown ids): 30 loose clusters, hard for a starved graph."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, DIM))
    rows = centres[rng.integers(0, 30, N_ITEMS)] + 0.6 * rng.normal(size=(N_ITEMS, DIM))
    return np.vstack([np.zeros((1, DIM)), rows]).astype(np.float32)


def _corpus() -> pa.Table:
    return pa.table({
        "item_id": pa.array([f"i{k}" for k in range(N_ITEMS)]),
        "item_profile__category": pa.array([f"c{k % 7}" for k in range(N_ITEMS)]),
        "item_stats__interaction_count": pa.array(np.arange(N_ITEMS, dtype=np.float64) % 50),
    })


def _tower(path, *, version: int = 1):
    return build_reference_tower(
        path, features=[ReferenceFeature("item_id", "categorical", tuple(f"i{k}" for k in range(N_ITEMS)))],
        dimension=DIM, model_name="movies", model_version=version,
        schema={"item_id": "item_id", "item_category": "item_profile__category"},
        tables={"item_id": _clustered_table()},
    )


STARVED = EdgeIndexConfig(exact_below=1000, m=4, ef_construct=4, ef=1, recall_floor=0.99, recall_queries=50)
GENEROUS = EdgeIndexConfig(exact_below=1000, m=16, ef_construct=100, ef=300, recall_floor=0.95, recall_queries=50)


def test_writer_builds_the_graph_and_verification_measures_its_recall(tmp_path):
    tower = _tower(tmp_path / "item.onnx")
    with EdgeVectorStore(tmp_path / "vectors", index=GENEROUS) as store:
        report = QdrantEmbeddingWriter(store, tower, progress=False).write(StaticItemSource(_corpus()))
        assert report.items == N_ITEMS and store.indexed_count("movies__v1") == N_ITEMS  # finish_bulk_load built it
        verified = verify_collection(store, tower=tower, items=_corpus())
        assert verified.recall is not None and 0.95 <= verified.recall <= 1.0


def test_verification_refuses_a_starved_graph_naming_the_figure_and_the_settings(tmp_path):
    tower = _tower(tmp_path / "item.onnx")
    with EdgeVectorStore(tmp_path / "vectors", index=STARVED) as store:
        QdrantEmbeddingWriter(store, tower, progress=False).write(_corpus())
        with pytest.raises(RecallBelowFloorError) as refused:
            verify_collection(store, tower=tower, items=_corpus())
    message = str(refused.value)
    assert "recall@100" in message and "below the floor 0.99" in message
    assert "ef=1, m=4, ef_construct=4" in message
    assert "TOWER_EDGE__EF" in message and "TOWER_EDGE__M" in message and "--rebuild" in message
    measured = float(message.split("finds ")[1].split(" of the exact")[0])
    assert 0.0 <= measured < 0.99


def test_a_collection_above_exact_below_without_a_graph_is_not_verified(tmp_path):
    tower = _tower(tmp_path / "item.onnx")
    with EdgeVectorStore(tmp_path / "vectors", index=GENEROUS) as store:
        store.create_collection("movies__v1", dimension=DIM)
        writer = QdrantEmbeddingWriter(store, tower, progress=False)
        embeddings = writer.tower.embed(_corpus())  # [N, D]
        ids = [f"i{k}" for k in range(N_ITEMS)]
        store.upsert("movies__v1", ids, embeddings, [{"category": None}] * N_ITEMS)  # written, never finished
        with pytest.raises(ConflictError, match="no HNSW graph; rerun `towerctl embeddings write`"):
            verify_collection(store, tower=tower, items=_corpus())


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """TOWER_HOME with a migrated registry, 'movies' v1 registered, the corpus served from memory, and the embedded
    engine configured by TOWER_EDGE__* to a starved graph."""
    from tower_platform.cli import embeddings as embeddings_cli
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.settings import get_settings

    for name, value in {"EXACT_BELOW": "1000", "M": "4", "EF_CONSTRUCT": "4", "EF": "1", "RECALL_FLOOR": "0.99",
                        "RECALL_QUERIES": "50"}.items():
        monkeypatch.setenv(f"TOWER_EDGE__{name}", value)
    monkeypatch.delenv("TOWER_QDRANT__URL", raising=False)
    settings = migrated_home(tmp_path / "home", monkeypatch)
    folder = settings.artifacts_dir / "movies" / "v1"
    item = _tower(folder / "item.onnx")
    query = _tower(folder / "query.onnx")
    spec = folder / "spec.json"
    spec.write_text("{}")
    with SqlRegistryStore(settings.registry_url) as registry:
        artifacts = {p.name: (str(p), file_sha256(p)) for p in (item, query, spec)}
        register_placeholder_version(registry, artifacts=artifacts, feature_service="movies_item", features=["item_id"])
    monkeypatch.setattr(embeddings_cli, "item_source", lambda _settings: StaticItemSource(_corpus()))
    yield settings
    get_settings.cache_clear()


def _invoke(*args):
    from typer.testing import CliRunner

    from tower_platform.cli.main import app
    from tower_platform.settings import get_settings

    get_settings.cache_clear()  # the test changes TOWER_EDGE__* between commands
    return CliRunner().invoke(app, list(args))


def test_cli_refuses_to_index_below_the_floor_then_indexes_after_raising_the_settings(registered, monkeypatch):
    from tower_platform.registry.store import SqlRegistryStore

    refused = _invoke("embeddings", "write", "movies", "--version", "1")
    assert refused.exit_code == 4, refused.output
    (line,) = [text for text in refused.stderr.splitlines() if text.startswith("error:")]  # after the progress bar
    assert "Traceback" not in refused.stderr and "TOWER_EDGE__EF" in line
    assert line.startswith("error: vector collection 'movies__v1' finds")
    with SqlRegistryStore(registered.registry_url) as registry:
        assert registry.get_version("movies", 1).status == "registered"  # written, but not indexed

    monkeypatch.setenv("TOWER_EDGE__EF", "3000")  # search only: every point is a candidate
    monkeypatch.setenv("TOWER_EDGE__RECALL_FLOOR", "0.5")
    verified = _invoke("embeddings", "verify", "movies", "--version", "1", "--json")
    assert verified.exit_code == 0, verified.output
    assert 0.5 <= json.loads(verified.stdout)["recall"] <= 1.0

    monkeypatch.setenv("TOWER_EDGE__M", "16")  # the graph itself: written again from scratch
    monkeypatch.setenv("TOWER_EDGE__EF_CONSTRUCT", "100")
    monkeypatch.setenv("TOWER_EDGE__EF", "300")
    monkeypatch.setenv("TOWER_EDGE__RECALL_FLOOR", "0.95")
    rebuilt = _invoke("embeddings", "write", "movies", "--version", "1", "--rebuild", "--json")
    assert rebuilt.exit_code == 0, rebuilt.output
    result = json.loads(rebuilt.stdout)
    assert (result["written"], result["skipped"], result["status"]) == (N_ITEMS, 0, "indexed")
    assert result["recall"] >= 0.95
    with EdgeVectorStore(registered.edge_path) as store:
        assert store.graph_settings("movies__v1") == (16, 100)


def test_rebuild_refuses_the_collection_production_serves(registered, monkeypatch):
    from tower_platform.registry.store import SqlRegistryStore

    monkeypatch.setenv("TOWER_EDGE__EXACT_BELOW", "100000")  # searched exactly: recall 1.0
    assert _invoke("embeddings", "write", "movies", "--version", "1").exit_code == 0
    assert _invoke("models", "promote", "movies", "1").exit_code == 0
    refused = _invoke("embeddings", "write", "movies", "--version", "1", "--rebuild")
    assert refused.exit_code == 4 and "production alias" in refused.stderr
    with SqlRegistryStore(registered.registry_url) as registry:
        assert registry.get_version("movies", 1).status == "production"
    with EdgeVectorStore(registered.edge_path) as store:
        assert store.collection_info("movies__v1").point_count == N_ITEMS
        assert store.alias_target("movies") == "movies__v1"


@pytest.mark.parametrize("backend", ["edge", "server-api"])
def test_read_collection_fills_one_matrix_page_by_page(tmp_path, backend):
    rows = np.random.default_rng(3).normal(size=(1000, 8)).astype(np.float32)  # [1000, 8]
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    ids = [f"i{k}" for k in range(1000)]
    opened = EdgeVectorStore(tmp_path) if backend == "edge" else QdrantVectorStore.memory()
    with opened as store:
        store.create_collection("m__v1", dimension=8)
        store.upsert("m__v1", ids, rows, [{"category": f"c{k % 3}", "popularity": None} for k in range(1000)])
        pages = list(store.scroll_vectors("m__v1", fields=("category",), batch_size=300))
        assert [len(p.item_ids) for p in pages] == [300, 300, 300, 100]
        contents = read_collection(store, "m__v1", fields=("category", "popularity"), page_size=300)
    assert contents.vectors.shape == (1000, 8) and contents.vectors.dtype == np.float32
    order = np.asarray([int(i[1:]) for i in contents.item_ids])  # scroll order: by point id, not by item
    assert sorted(order.tolist()) == list(range(1000))
    np.testing.assert_allclose(contents.vectors, rows[order], atol=1e-6)
    assert contents.payload["category"] == [f"c{k % 3}" for k in order]
    assert contents.payload["popularity"] == [None] * 1000


def test_a_new_store_removes_what_killed_processes_left(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{CREATING_PREFIX}{dead.stdout.strip()}-m__v1-0a"  # its creator has exited
    live = tmp_path / f"{CREATING_PREFIX}{os.getpid()}-m__v2-0b"  # this process is still building it
    doomed = tmp_path / f"{DELETING_PREFIX}m__v0-0c"
    for folder in (stale, live, doomed):
        (folder / "segments").mkdir(parents=True)
    with EdgeVectorStore(tmp_path) as store:
        assert store.list_collections() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
