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


class SharedVectors:
    """One vector store handed to every command of a test: entering and closing it leave it open (the in-memory
    qdrant-client store lives only as long as its object)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def close(self) -> None:
        return None


def cli_opens_vectors(monkeypatch, open_store) -> None:
    """Make every `towerctl` command (run in this process) open ``open_store()`` as its vector store: the CLI's
    ``open_vectors`` is replaced in each command module that imported it."""
    import sys

    import tower_platform.cli.main  # noqa: F401  (imports every command module)
    from tower_platform.cli import context

    original = context.open_vectors

    def opened(settings, *args, **kwargs):
        return open_store()

    for name, module in list(sys.modules.items()):
        if name.startswith("tower_platform.cli") and getattr(module, "open_vectors", None) is original:
            monkeypatch.setattr(module, "open_vectors", opened)


def database_rows(url: str) -> dict[str, list[tuple]]:
    """Every row of every table of a registry database, ordered, to compare before and after a dry run."""
    from sqlalchemy import MetaData, create_engine, select

    engine = create_engine(url)
    try:
        tables = MetaData()
        tables.reflect(bind=engine)
        with engine.connect() as connection:
            return {
                name: [tuple(row) for row in connection.execute(select(table).order_by(*table.primary_key.columns
                                                                                         or table.columns))]
                for name, table in sorted(tables.tables.items())
            }
    finally:
        engine.dispose()
