"""Registry migrations on SQLite and PostgreSQL: empty -> head -> base -> head, ``alembic check``, and a wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from tower_platform.errors import ConfigError
from tower_platform.registry.migration import (
    alembic_config,
    check_models_match,
    current_state,
    downgrade_schema,
    head_revision,
    upgrade_schema,
)
from tower_platform.registry.schema import metadata

ROOT = Path(__file__).resolve().parents[2]
REGISTRY_TABLES = {
    "models", "model_versions", "collections", "aliases", "audit_log", "alignment_reports", "alignment_segments",
    "promotion_intents",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_the_orm_declares_exactly_the_registry_tables():
    assert set(metadata.tables) == REGISTRY_TABLES


def test_upgrade_from_empty_downgrade_to_base_and_upgrade_again(database_url):
    assert current_state(database_url).empty
    state = upgrade_schema(database_url)
    assert state.at_head and state.current == (head_revision(),)
    assert _tables(database_url) == REGISTRY_TABLES
    down = downgrade_schema(database_url, revision="base")
    assert down.current == () and not down.has_tables
    assert _tables(database_url) == set()
    again = upgrade_schema(database_url)
    assert again.at_head and _tables(database_url) == REGISTRY_TABLES
    assert upgrade_schema(database_url).at_head  # re-running is a no-op


def test_alembic_check_finds_no_difference_between_the_orm_and_the_migrations(migrated_database_url):
    check_models_match(migrated_database_url)


def test_alembic_check_fails_when_the_database_drifts_from_the_orm(migrated_database_url):
    engine = create_engine(migrated_database_url)
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE models ADD COLUMN owner VARCHAR(64)"))
    engine.dispose()
    with pytest.raises(ConfigError, match="differ from the migrations"):
        check_models_match(migrated_database_url)


def test_revisions_form_one_line_with_a_downgrade_each():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert script.get_heads() == [head_revision()]
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    for revision in revisions:
        assert callable(revision.module.downgrade) and callable(revision.module.upgrade)


@pytest.mark.slow
def test_migrations_run_from_an_installed_wheel(tmp_path):
    """Build the wheel from a copy of the sources, then migrate with only the wheel's files on the path."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "bundled", "*.egg-info")
    for folder in ("platform", "towers", "feature_repo", "migrations"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    (source / "platform" / "tower_platform" / "bundled").mkdir()
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("*.whl")
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(installed)
    for shipped in ("env.py", "alembic.ini", "script.py.mako", "versions/0001_initial_registry_schema.py"):
        assert f"tower_platform/_migrations/{shipped}" in names
    probe = textwrap.dedent(
        """
        import sys
        from tower_platform.paths import packaged_migrations
        from tower_platform.registry.migration import upgrade_schema
        location = packaged_migrations()
        assert str(location).startswith(sys.argv[1]), location
        print(upgrade_schema(sys.argv[2]).current)
        """
    )
    database = tmp_path / "wheel.db"
    env = {**os.environ, "PYTHONPATH": str(installed)}
    run = subprocess.run(
        [sys.executable, "-c", probe, str(installed), f"sqlite:///{database}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"('{head_revision()}',)"
