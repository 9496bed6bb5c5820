"""Revision 0003: production is recorded once, as the alias row; up and down keep which version is production."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from registry_support import register_placeholder_version
from tower_platform.registry.migration import downgrade_schema, upgrade_schema
from tower_platform.registry.store import SqlRegistryStore


def _artifacts(folder) -> dict[str, tuple[str, str]]:
    from tower_platform.registry.artifact import file_sha256

    paths = {}
    for name in ("query.onnx", "item.onnx", "spec.json"):
        path = folder / name
        path.write_bytes(name.encode())
        paths[name] = (str(path), file_sha256(path))
    return paths


def _stored_statuses(url: str) -> dict[int, str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT version, status FROM model_versions")).all()
    finally:
        engine.dispose()
    return {int(version): status for version, status in rows}


def test_production_is_the_alias_row_across_upgrade_and_downgrade(migrated_database_url, tmp_path):
    url = migrated_database_url
    artifacts = _artifacts(tmp_path)
    with SqlRegistryStore(url, check_schema=False) as registry:
        for _ in range(2):
            register_placeholder_version(registry, artifacts=artifacts)
        with registry.locked_model("movies") as unit:
            unit.set_status(1, "indexed")
            unit.set_status(2, "indexed")
            unit.set_production(2)
        shown = {v.version: v.status for v in registry.list_versions("movies")}
    assert shown == {1: "indexed", 2: "production"}
    assert _stored_statuses(url) == {1: "indexed", 2: "indexed"}  # the alias row is the one record

    downgrade_schema(url, revision="0002")  # the older schema stores production in the status as well
    assert _stored_statuses(url) == {1: "indexed", 2: "production"}
    upgrade_schema(url)
    assert _stored_statuses(url) == {1: "indexed", 2: "indexed"}
    with SqlRegistryStore(url) as registry:
        assert registry.production_version("movies").version == 2
        assert {v.version: v.status for v in registry.list_versions("movies")} == shown


def test_production_is_never_a_stored_status(migrated_database_url, tmp_path):
    import pytest

    artifacts = _artifacts(tmp_path)
    with SqlRegistryStore(migrated_database_url) as registry:
        register_placeholder_version(registry, artifacts=artifacts)
        with pytest.raises(ValueError, match="production"), registry.locked_model("movies") as unit:
            unit.set_status(1, "production")
