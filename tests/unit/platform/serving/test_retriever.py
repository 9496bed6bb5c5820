"""Retriever: online features -> real ONNX query tower -> Qdrant ":memory:" search on the production alias."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tower_platform.vectors.writer import QdrantEmbeddingWriter
from tower_platform.errors import ConflictError, IntegrityError
from tower_platform.registry.artifact import file_sha256
from reference_tower import ReferenceFeature, build_reference_tower
from tower_platform.serving.retriever import Retriever
from tower_platform.vectors.store import QdrantVectorStore, open_vector_store
from registry_support import migrated_home, register_placeholder_version

N_ITEMS = 30
DIM = 8
CATEGORIES = ("Action", "Comedy", "Drama")
ITEM_IDS = tuple(f"i{k}" for k in range(N_ITEMS))


class DictOnlineStore:
    """A feature store's ``online_features(service_name, entity_rows)`` over fixed rows (the CLI tests' Feast)."""

    def __init__(self, rows):
        self.rows = rows
        self.services: list[str] = []

    def online_features(self, service_name, entity_rows):
        self.services.append(service_name)
        found = [self.rows[r["user_id"]] for r in entity_rows]
        names = sorted({name for row in found for name in row})
        return {name: [row.get(name) for row in found] for name in names}


class DictQueryFeatures:
    def __init__(self, rows):
        self.rows = rows
        self.asked: list[str] = []

    def query_features(self, user_id):
        self.asked.append(user_id)
        return self.rows[user_id]


def _tables(seed: int) -> np.ndarray:
    table = np.random.default_rng(seed).normal(size=(N_ITEMS + 1, DIM)).astype(np.float32)  # [V+1, D]
    table[0] = 0.0
    return table


def _towers(folder, *, version: int, seed: int = 0):
    """item.onnx and query.onnx sharing one item table: a user whose history is item X queries near X."""
    table = _tables(seed)
    item = build_reference_tower(
        folder / "item.onnx",
        features=[ReferenceFeature("item_id", "categorical", ITEM_IDS)],
        dimension=DIM, model_name="movies", model_version=version,
        schema={"item_id": "item_id", "item_category": "item_profile__category"},
        tables={"item_id": table}, seed=seed,
    )
    query = build_reference_tower(
        folder / "query.onnx",
        features=[
            ReferenceFeature("user_id", "categorical", ("u1", "u2")),
            ReferenceFeature("user_history__recent_items", "multi_categorical", ITEM_IDS, max_len=4),
        ],
        dimension=DIM, model_name="movies", model_version=version, feature_service="movies_query+movies_items",
        schema={"query": [{"name": "user_history__recent_items", "vocab_group": "item_id"}]},
        tables={"user_id": np.zeros((3, DIM), np.float32), "user_history__recent_items": table}, seed=seed,
    )
    return item, query


def _corpus() -> pa.Table:
    return pa.table(
        {"item_id": list(ITEM_IDS), "item_profile__category": [CATEGORIES[k % 3] for k in range(N_ITEMS)]}
    )


@pytest.fixture
def production(tmp_path):
    """Version 1 written, verified by the writer's own parity and made production through the alias."""
    store = QdrantVectorStore.memory()
    item, query = _towers(tmp_path, version=1)
    QdrantEmbeddingWriter(store, item, progress=False).write(_corpus())
    store.swap_alias("movies", "movies__v1", previous=None)
    yield store, query
    store.close()


USERS = {
    "u1": {"user_id": "u1", "user_history__recent_items": ["i7"]},
    "u2": {"user_id": "u2", "user_history__recent_items": None},  # a cold user
}


def test_recent_items_are_excluded(production):
    store, query = production
    features = DictQueryFeatures(USERS)
    retriever = Retriever(store, query, features, model="movies", expected_version=1)
    # without the exclusion the history item itself is the nearest (same table row, only the bias differs)
    unfiltered = store.search("movies", retriever.tower.embed({"user_id": ["u1"], "user_history__recent_items": [["i7"]]})[0], limit=1)
    assert unfiltered[0].item_id == "i7"
    result = retriever.recommend("u1", k=5)
    assert features.asked == ["u1"]
    assert len(result.items) == 5 and "i7" not in [h.item_id for h in result.items]
    assert (result.model, result.version) == ("movies", 1)
    assert all(h.payload["model_version"] == 1 for h in result.items)
    assert set(vars(result.timings)) == {"features_ms", "query_tower_ms", "search_ms", "total_ms"}
    extra = retriever.recommend("u1", k=N_ITEMS, exclude_item_ids=["i0", "i1"])
    assert {h.item_id for h in extra.items} == set(ITEM_IDS) - {"i7", "i0", "i1"}


def test_the_user_id_reaches_a_tower_that_takes_it_when_the_features_lack_it(tmp_path):
    """A query tower with a user-id input (as with DAT): online features carry no id column, the retriever adds it."""
    store = QdrantVectorStore.memory()
    table = _tables(0)
    item, _ = _towers(tmp_path, version=1)
    QdrantEmbeddingWriter(store, item, progress=False).write(_corpus())
    store.swap_alias("movies", "movies__v1", previous=None)
    users = np.zeros((3, DIM), np.float32)
    users[1], users[2] = table[1 + 3], table[1 + 5]  # u1 sits on item i3, u2 on item i5 (row 0 is padding)
    query = build_reference_tower(
        tmp_path / "query_dat.onnx",
        features=[ReferenceFeature("user_id", "categorical", ("u1", "u2"))],
        dimension=DIM, model_name="movies", model_version=1, tables={"user_id": users},
    )
    no_ids = DictQueryFeatures({"u1": {}, "u2": {}})
    retriever = Retriever(store, query, no_ids, model="movies", expected_version=1)
    assert retriever.recommend("u1", k=1).items[0].item_id == "i3"
    assert retriever.recommend("u2", k=1).items[0].item_id == "i5"


def test_category_filter(production):
    store, query = production
    retriever = Retriever(store, query, DictQueryFeatures(USERS), model="movies", expected_version=1)
    result = retriever.recommend("u2", k=N_ITEMS, category="Comedy")
    assert len(result.items) == N_ITEMS // 3  # every third item is a comedy
    assert {h.payload["category"] for h in result.items} == {"Comedy"}


def test_refuses_a_query_tower_of_another_version(production, tmp_path):
    store, _ = production
    (tmp_path / "v2").mkdir()
    _, query_v2 = _towers(tmp_path / "v2", version=2)
    with pytest.raises(ConflictError, match="version 2 but the production version of 'movies' is 1"):
        Retriever(store, query_v2, DictQueryFeatures(USERS), model="movies", expected_version=1)
    with pytest.raises(ConflictError, match="alias 'movies' points to 'movies__v1', not 'movies__v2'"):
        Retriever(store, query_v2, DictQueryFeatures(USERS), model="movies", expected_version=2)


def test_refuses_when_the_alias_moves_after_loading(production, tmp_path):
    store, query = production
    retriever = Retriever(store, query, DictQueryFeatures(USERS), model="movies", expected_version=1)
    (tmp_path / "v2").mkdir()
    item_v2, _ = _towers(tmp_path / "v2", version=2, seed=1)
    QdrantEmbeddingWriter(store, item_v2, progress=False).write(_corpus())
    store.swap_alias("movies", "movies__v2", previous="movies__v1")
    with pytest.raises(ConflictError, match="another version than 1"):
        retriever.recommend("u1", k=3)


def test_refuses_a_tampered_query_tower(production, tmp_path):
    store, query = production
    recorded = file_sha256(query)
    Retriever(store, query, DictQueryFeatures(USERS), model="movies", expected_version=1, expected_sha256=recorded)
    data = bytearray(query.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte
    query.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"query\.onnx has sha256 .* registry recorded"):
        Retriever(store, query, DictQueryFeatures(USERS), model="movies", expected_version=1, expected_sha256=recorded)


# -- CLI: towerctl recommend against a real SQLite registry, a promoted version and Qdrant local storage ----------
@pytest.fixture
def promoted(tmp_path, monkeypatch):
    from tower_platform.cli import context
    from tower_platform.registry.promotion import promote
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.settings import get_settings

    settings = migrated_home(tmp_path / "home", monkeypatch)
    folder = settings.artifacts_dir / "movies" / "v1"
    folder.mkdir(parents=True)
    item, query = _towers(folder, version=1)
    spec = folder / "spec.json"
    spec.write_text("{}")
    with SqlRegistryStore(settings.registry_url) as registry, open_vector_store(settings) as vectors:
        register_placeholder_version(
            registry, artifacts={p.name: (str(p), file_sha256(p)) for p in (item, query, spec)},
            feature_service="movies_query", features=[],
        )
        QdrantEmbeddingWriter(vectors, item, progress=False).write(_corpus())
        registry.record_collection("movies", 1, name="movies__v1", point_count=N_ITEMS, dimension=DIM,
                                   distance="cosine", verified=True)
        registry.mark_indexed("movies", 1, actor="test")
        promote(registry, vectors, "movies", 1, actor="test")
    online = DictOnlineStore(USERS)
    monkeypatch.setattr(context, "feature_store", lambda _settings: online)
    yield settings
    get_settings.cache_clear()


def _invoke(*args):
    from typer.testing import CliRunner

    from tower_platform.cli.main import app

    return CliRunner().invoke(app, list(args))


def test_cli_recommend_json_and_table(promoted):
    import json

    result = _invoke("recommend", "u1", "-k", "4", "--category", "Drama", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["model"], body["version"], len(body["items"])) == ("movies", 1, 4)
    assert [r["rank"] for r in body["items"]] == [1, 2, 3, 4]
    assert {r["category"] for r in body["items"]} == {"Drama"} and "i7" not in {r["item_id"] for r in body["items"]}
    assert set(body["timings_ms"]) == {"features_ms", "query_tower_ms", "search_ms", "total_ms"}
    from tower_platform.cli import context

    # the query service of the tower's label `movies_query+movies_items` (an export without a serving contract)
    assert context.feature_store(promoted).services == ["movies_query"]
    table = _invoke("recommend", "u2", "--model", "movies")
    assert table.exit_code == 0 and "movies v1: top 10 for user u2" in table.stdout
    assert "query tower" in table.stderr


def test_cli_recommend_refuses_a_tampered_query_tower(promoted):
    path = promoted.artifacts_dir / "movies/v1/query.onnx"
    path.write_bytes(path.read_bytes() + b"\x00")
    result = _invoke("recommend", "u1")
    assert result.exit_code == 4
    assert "query.onnx has sha256" in result.stderr and "Traceback" not in result.stderr


def test_cli_recommend_for_an_unknown_model_is_not_found(promoted):
    result = _invoke("recommend", "u1", "--model", "unknown")
    assert result.exit_code == 3 and "unknown" in result.stderr
