from __future__ import annotations

from pathlib import Path

from tower_platform.settings import Settings


def test_defaults_live_under_tower_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOWER_DATABASE_URL", raising=False)
    s = Settings()
    assert s.home_dir == (tmp_path / "home").resolve()
    assert s.registry_url == f"sqlite:///{(tmp_path / 'home' / 'registry.db').resolve()}"
    assert s.qdrant_path == (tmp_path / "home" / "qdrant").resolve()
    assert s.qdrant.url is None


def test_nested_environment_and_secrets(monkeypatch, tmp_path):
    monkeypatch.setenv("TOWER_HOME", str(tmp_path))
    monkeypatch.setenv("TOWER_DATABASE_URL", "postgresql+psycopg://u:secret@db:5432/tower")
    monkeypatch.setenv("TOWER_QDRANT__URL", "http://qdrant:6333")
    monkeypatch.setenv("TOWER_QDRANT__API_KEY", "k")
    s = Settings()
    assert s.registry_url.endswith("@db:5432/tower")
    assert "secret" not in repr(s)
    assert s.qdrant.url == "http://qdrant:6333"
    assert s.qdrant.api_key.get_secret_value() == "k"


def test_packaged_feature_repo_has_the_store_config():
    s = Settings()
    assert isinstance(s.feature_repo_dir, Path)
