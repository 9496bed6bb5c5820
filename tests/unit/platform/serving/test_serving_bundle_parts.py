"""Parts of the serving bundle that need no trained model: the standalone Feast file, the vector backend section,
the atomic folder write."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tower_platform.errors import ConfigError
from tower_platform.features.standalone_config import standalone_feature_store_yaml
from tower_platform.paths import packaged_feature_repo
from tower_platform.serving.bundle import _public_url, _write_folder, vectors_section
from tower_platform.vectors.edge import EdgeVectorStore
from tower_platform.vectors.store import QdrantVectorStore


def test_the_shipped_repository_file_becomes_one_feast_alone_loads(tmp_path):
    shipped = yaml.safe_load((packaged_feature_repo() / "feature_store.yaml").read_text())
    assert shipped["offline_store"]["type"].startswith("tower_platform.")  # why Feast alone cannot load it
    text = standalone_feature_store_yaml(packaged_feature_repo(), home_dir=tmp_path, header="line one\nline two")
    assert text.startswith("# line one\n# line two\n")
    config = yaml.safe_load(text)
    assert config["offline_store"] == {"type": "file"}  # Feast's own store; online reads never use it
    assert config["registry"] == f"{tmp_path}/feast/registry.db"
    assert config["online_store"] == {"type": "sqlite", "path": f"{tmp_path}/feast/online.db"}
    assert (config["project"], config["provider"], config["entity_key_serialization_version"]) == ("tower", "local", 3)
    assert "${TOWER_HOME}" not in text and "tower_platform" not in text.split("\n", 2)[2]


def test_relative_paths_are_anchored_and_other_variables_kept(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(
        "project: shop\nprovider: local\nregistry: {path: data/registry.db, cache_ttl_seconds: 60}\n"
        "online_store: {type: redis, connection_string: '${REDIS_URL}'}\n"
        "offline_store: {type: duckdb}\nentity_key_serialization_version: 3\n"
    )
    config = yaml.safe_load(standalone_feature_store_yaml(repo, home_dir=tmp_path))
    assert config["registry"] == {"path": str(repo / "data" / "registry.db"), "cache_ttl_seconds": 60}
    assert config["online_store"] == {"type": "redis", "connection_string": "${REDIS_URL}"}  # Feast expands it
    assert config["offline_store"] == {"type": "duckdb"}  # Feast's own: kept


def test_a_custom_online_store_cannot_be_served_without_its_package(tmp_path):
    (tmp_path / "feature_store.yaml").write_text(
        "project: p\nregistry: r.db\nonline_store: {type: mycompany.stores.FastOnlineStore}\n")
    with pytest.raises(ConfigError, match="online store 'mycompany.stores.FastOnlineStore', which is not one of "
                                          "Feast's own"):
        standalone_feature_store_yaml(tmp_path, home_dir=tmp_path)


def test_the_vector_section_names_how_another_process_reaches_the_vectors(tmp_path):
    with EdgeVectorStore(tmp_path / "vectors") as edge:
        section = vectors_section(edge, alias="movies")
    assert section["kind"] == "qdrant-edge"
    assert section["edge"]["alias_file"] == str((tmp_path / "vectors" / "aliases" / "movies").resolve())
    assert section["edge"]["search"]["exact_below"] == 20_000 and "copy the collection folder" in section["edge"]["open"]
    server = QdrantVectorStore(None, kind="remote", where="https://reader:s3cret@qdrant.example:6333/base?api-key=k")
    assert vectors_section(server, alias="movies")["server"] == {
        "url": "https://qdrant.example:6333/base", "api_key_env": "QDRANT_API_KEY",
        "search": "query_points(collection_name=<alias>, query=<vector>, limit=<k + excluded>, with_payload=True)"}
    with QdrantVectorStore.memory() as memory, pytest.raises(ConfigError, match="'memory'.*no other process can open"):
        vectors_section(memory, alias="movies")
    assert _public_url("http://127.0.0.1:6333") == "http://127.0.0.1:6333"


def test_the_folder_appears_whole_and_a_killed_runs_leftovers_go(tmp_path):
    out = tmp_path / "bundle"
    leftover = tmp_path / ".bundle.tmp-0123"  # what a killed run left
    leftover.mkdir()
    (leftover / "query.onnx").write_bytes(b"half")
    unrelated = tmp_path / ".other.tmp-0123"
    unrelated.mkdir()
    _write_folder(out, {"a.txt": b"one", "b.txt": b"two"})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {"a.txt": b"one", "b.txt": b"two"}
    assert not leftover.exists() and unrelated.exists()
    _write_folder(out, {"a.txt": b"new"})  # a replacement (the command asks for --force first)
    assert [p.name for p in out.iterdir()] == ["a.txt"] and (out / "a.txt").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-0123", "bundle"]


def test_a_failed_write_leaves_the_previous_bundle(tmp_path, monkeypatch):
    out = tmp_path / "bundle"
    _write_folder(out, {"a.txt": b"old"})
    real_rename = Path.rename

    def failing(self, target):
        if self.name.startswith(".bundle.tmp-"):
            raise OSError("disk full")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="disk full"):
        _write_folder(out, {"a.txt": b"new"})
    assert (out / "a.txt").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
