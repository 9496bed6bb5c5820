"""Test support shared by the registry, promotion and writer tests (importable: tests/ is on sys.path)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def register_placeholder_version(
    store,
    *,
    artifacts: Mapping[str, tuple[str, str]],
    model: str = "movies",
    feature_service: str = "movies_fs",
    features: Iterable[str] = ("a",),
    actor: str = "test",
):
    """Register a version whose training metadata does not matter to the test (only its artifacts do)."""
    return store.register_version(
        model,
        artifacts=artifacts,
        feature_service=feature_service,
        features=list(features),
        training_config={},
        fingerprint="f" * 64,
        time_window=None,
        estimator_path=None,
        metrics={},
        actor=actor,
    )


def migrated_home(home, monkeypatch):
    """Point TOWER_HOME at ``home``, create it with a registry at Alembic head, and return fresh Settings."""
    from tower_platform.registry.migration import upgrade_schema
    from tower_platform.settings import Settings, get_settings

    monkeypatch.setenv("TOWER_HOME", str(home))
    get_settings.cache_clear()
    settings = Settings()
    settings.home_dir.mkdir(parents=True)
    upgrade_schema(settings.registry_url)
    return settings
