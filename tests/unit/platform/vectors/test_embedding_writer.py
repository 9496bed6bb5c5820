"""QdrantEmbeddingWriter and verify_collection with a real (tiny) ONNX item tower and Qdrant ":memory:"."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tower_platform.vectors.writer import (
    QdrantEmbeddingWriter,
    StaticItemSource,
    popularity_buckets,
    verify_collection,
)
from tower_platform.errors import ConflictError, IntegrityError, NotFoundError
from tower_platform.registry.artifact import file_sha256
from tower_platform.serving.onnx_tower import OnnxTower
from reference_tower import ReferenceFeature, build_reference_tower
from tower_platform.vectors.store import QdrantVectorStore, open_vector_store, point_id
from registry_support import migrated_home, register_placeholder_version

N_ITEMS = 40
GENRES = ("Action", "Comedy", "Drama", "Horror")


def _corpus(n: int = N_ITEMS) -> pa.Table:
    idx = np.arange(n)
    genres = [[GENRES[i % 4], GENRES[(i + 1) % 4]] if i % 5 else None for i in range(n)]  # some items without genres
    return pa.table(
        {
            "item_id": pa.array(idx + 100, pa.int64()),  # Feast serves integer ids; payloads carry strings
            "item_profile__genres": pa.array(genres, pa.list_(pa.string())),
            "item_profile__category": pa.array([GENRES[i % 4] for i in idx]),
            "item_stats__interaction_count": pa.array((idx * 3).astype(np.float64)),  # 0, 3, ..., 117
        }
    )


def _item_tower(path, *, version: int = 1, dimension: int = 8, seed: int = 0):
    corpus = _corpus()
    return build_reference_tower(
        path,
        features=[
            ReferenceFeature("item_id", "categorical", tuple(str(v) for v in corpus.column("item_id").to_pylist())),
            ReferenceFeature("item_profile__genres", "multi_categorical", GENRES, max_len=3),
            ReferenceFeature("item_stats__interaction_count", "numeric"),
        ],
        dimension=dimension,
        model_name="movies",
        model_version=version,
        schema={"item_id": "item_id", "item_category": "item_profile__category"},
        seed=seed,
    )


@pytest.fixture
def store():
    with QdrantVectorStore.memory() as vs:
        yield vs


@pytest.fixture
def tower_path(tmp_path):
    return _item_tower(tmp_path / "item.onnx")


def test_popularity_buckets_by_hand():
    # 10 items: head = floor(0.2 * 10) = 2 most interacted (90, 80); tail = <= 5 interactions; torso = the rest
    counts = np.array([90, 80, 70, 6, 5, 0, np.nan, 12, 3, 40])
    assert popularity_buckets(counts).tolist() == [
        "head", "head", "torso", "torso", "tail", "tail", "tail", "torso", "tail", "torso",
    ]


def test_feeds_pad_truncate_and_mark_missing(tower_path):
    tower = OnnxTower(tower_path)
    rows = {
        "item_id": [100, None],
        "item_profile__genres": [["Drama", "Action", "Comedy", "Horror"], None],
        "item_stats__interaction_count": [2, None],
    }
    feeds = tower.feeds(rows)
    assert feeds["item_id"].tolist() == ["100", ""]
    assert feeds["item_profile__genres"].tolist() == [["Drama", "Action", "Comedy"], ["", "", ""]]
    assert feeds["item_stats__interaction_count"][0] == 2.0 and np.isnan(feeds["item_stats__interaction_count"][1])
    vectors = tower.run(feeds)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_write_creates_one_point_per_item_with_payload(store, tower_path):
    corpus = _corpus()
    report = QdrantEmbeddingWriter(store, tower_path, batch_size=16, progress=False).write(StaticItemSource(corpus))
    assert (report.collection, report.items, report.written, report.skipped) == ("movies__v1", N_ITEMS, N_ITEMS, 0)
    info = store.collection_info("movies__v1")
    assert (info.point_count, info.dimension, info.distance) == (N_ITEMS, 8, "cosine")
    # item 139 (index 39, genre 39 % 4 = 3: Horror) has the most interactions (117): head; item 101 has 3: tail
    (top, low) = store.retrieve("movies__v1", ["139", "101"])
    assert top.payload == {"item_id": "139", "category": "Horror", "popularity": "head", "model_version": 1}
    assert low.payload["popularity"] == "tail" and low.payload["category"] == "Comedy"
    stored = store._client.retrieve("movies__v1", ids=[point_id("139")], with_payload=True)
    assert stored[0].payload["item_id"] == "139"  # the point id is the UUIDv5 of the item id


def test_rerun_resumes_without_duplicates(store, tower_path):
    corpus = _corpus()
    writer = QdrantEmbeddingWriter(store, tower_path, batch_size=16, progress=False)
    partial = writer.write(corpus.slice(0, 16))  # as if the first run died after one batch
    assert store.collection_info("movies__v1").point_count == partial.written == 16
    rerun = writer.write(corpus)
    assert (rerun.written, rerun.skipped) == (N_ITEMS - 16, 16)
    again = writer.write(corpus)
    assert (again.written, again.skipped) == (0, N_ITEMS)
    assert store.collection_info("movies__v1").point_count == N_ITEMS
    report = verify_collection(store, tower=tower_path, items=corpus, sample_size=N_ITEMS)
    assert report.point_count == report.corpus_size == N_ITEMS and report.max_abs_diff <= 1e-5


def test_writer_refuses_another_version_or_a_changed_file(store, tower_path):
    with pytest.raises(ConflictError, match="version 1, not 'movies' version 2"):
        QdrantEmbeddingWriter(store, tower_path, progress=False).write(_corpus(), model="movies", version=2)
    digest = file_sha256(tower_path)
    _item_tower(tower_path, seed=7)  # overwritten after registration
    with pytest.raises(IntegrityError, match="item.onnx"):
        QdrantEmbeddingWriter(store, tower_path, expected_sha256=digest, progress=False)


def test_verify_fails_on_wrong_count(store, tower_path):
    corpus = _corpus()
    QdrantEmbeddingWriter(store, tower_path, progress=False).write(corpus)
    store.upsert("movies__v1", ["stray"], np.eye(8, dtype=np.float32)[:1], [{"category": None}])
    with pytest.raises(IntegrityError, match="41 points but the corpus has 40"):
        verify_collection(store, tower=tower_path, items=corpus)


def test_verify_fails_on_a_tampered_vector(store, tower_path):
    corpus = _corpus()
    QdrantEmbeddingWriter(store, tower_path, progress=False).write(corpus)
    verify_collection(store, tower=tower_path, items=corpus, sample_size=N_ITEMS)  # clean before tampering
    (point,) = store.retrieve("movies__v1", ["117"])
    store.upsert("movies__v1", ["117"], point.vector[::-1].copy()[None, :], [point.payload])  # still unit-norm
    with pytest.raises(IntegrityError, match="item '117' differs"):
        verify_collection(store, tower=tower_path, items=corpus, sample_size=N_ITEMS)


class _UnnormalisedStore(QdrantVectorStore):
    """A store whose backend does not normalise on insert (as a dot-product index or a buggy server would)."""

    def scroll(self, name, *, batch_size=1024, with_vectors=True):
        for page in super().scroll(name, batch_size=batch_size, with_vectors=with_vectors):
            yield [p._replace(vector=p.vector * 1.5) if p.item_id == "120" else p for p in page]


def test_verify_fails_on_a_non_unit_vector(tower_path):
    corpus = _corpus()
    with QdrantVectorStore.memory() as plain:
        store = _UnnormalisedStore(plain._client, kind="memory", where=":memory:")
        QdrantEmbeddingWriter(store, tower_path, progress=False).write(corpus)
        with pytest.raises(IntegrityError, match="item '120' has norm off"):
            verify_collection(store, tower=tower_path, items=corpus)


def test_verify_and_write_refuse_a_dimension_mismatch(store, tower_path):
    store.create_collection("movies__v1", dimension=4)
    with pytest.raises(ConflictError, match="dimension 4"):
        verify_collection(store, tower=tower_path, items=_corpus())
    with pytest.raises(ConflictError, match="dimension 4"):
        QdrantEmbeddingWriter(store, tower_path, progress=False).write(_corpus())


def test_verify_of_a_missing_collection_is_not_found(store, tower_path):
    with pytest.raises(NotFoundError, match="movies__v1"):
        verify_collection(store, tower=tower_path, items=_corpus())


# -- CLI: towerctl embeddings write | verify | status against a real SQLite registry and the embedded engine -------
@pytest.fixture
def registered(tmp_path, monkeypatch):
    """TOWER_HOME with a migrated registry and model 'movies' version 1 registered (artifacts with sha256)."""
    from tower_platform.cli import embeddings as embeddings_cli
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.settings import get_settings

    settings = migrated_home(tmp_path / "home", monkeypatch)
    folder = settings.artifacts_dir / "movies" / "v1"
    item = _item_tower(folder / "item.onnx")
    query = _item_tower(folder / "query.onnx", seed=3)  # any tower file: the embeddings commands never load it
    spec = folder / "spec.json"
    spec.write_text("{}")
    with SqlRegistryStore(settings.registry_url) as registry:
        register_placeholder_version(
            registry,
            artifacts={p.name: (str(p), file_sha256(p)) for p in (item, query, spec)},
            feature_service="movies_item",
            features=["item_id"],
        )
    monkeypatch.setattr(embeddings_cli, "item_source", lambda _settings: StaticItemSource(_corpus()))
    yield settings
    get_settings.cache_clear()


def _invoke(*args):
    from typer.testing import CliRunner

    from tower_platform.cli.main import app

    return CliRunner().invoke(app, list(args))


def test_cli_write_verifies_records_and_marks_indexed(registered):
    import json

    from tower_platform.registry.store import SqlRegistryStore

    result = _invoke("embeddings", "write", "movies", "--version", "1", "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert (written["collection"], written["items"], written["status"]) == ("movies__v1", N_ITEMS, "indexed")
    with SqlRegistryStore(registered.registry_url) as registry:
        version = registry.get_version("movies", 1)
    assert version.status == "indexed" and version.collection.verified and version.collection.point_count == N_ITEMS
    rerun = json.loads(_invoke("embeddings", "write", "movies", "--version", "1", "--json").stdout)
    assert (rerun["written"], rerun["skipped"]) == (0, N_ITEMS)
    status = _invoke("embeddings", "status", "movies", "--json")
    assert status.exit_code == 0, status.output
    (row,) = json.loads(status.stdout)["versions"]
    assert (row["qdrant_points"], row["recorded_points"], row["verified"], row["alias"]) == (N_ITEMS, N_ITEMS, True, False)
    assert json.loads(status.stdout)["alias_target"] is None  # writing never touches the production alias


def test_cli_verify_fails_on_a_short_collection_with_exit_code_4(registered):
    from tower_platform.registry.store import SqlRegistryStore

    with open_vector_store(registered) as vectors:
        QdrantEmbeddingWriter(vectors, registered.artifacts_dir / "movies/v1/item.onnx", progress=False).write(
            _corpus().slice(0, 10)
        )
    result = _invoke("embeddings", "verify", "movies", "--version", "1")
    assert result.exit_code == 4
    assert "10 points but the corpus has 40 items" in result.stderr and "Traceback" not in result.stderr
    with SqlRegistryStore(registered.registry_url) as registry:
        assert registry.get_version("movies", 1).status == "registered"


def test_cli_write_refuses_a_changed_item_tower(registered):
    _item_tower(registered.artifacts_dir / "movies/v1/item.onnx", seed=11)
    result = _invoke("embeddings", "write", "movies", "--version", "1")
    assert result.exit_code == 4 and "sha256" in result.stderr
