"""Alembic environment of the registry.

The URL comes from the Config (``attributes[URL_ATTRIBUTE]`` set by :mod:`tower_platform.registry.migration`, or
``sqlalchemy.url``), else from the settings (``TOWER_DATABASE_URL``, default ``sqlite:///$TOWER_HOME/registry.db``).
A connection handed over in ``attributes[CONNECTION_ATTRIBUTE]`` is used as is (its transaction belongs to the caller).
SQLite runs in batch mode so that later revisions can alter tables.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from tower_platform.registry.database import create_registry_engine, parse_url, sqlite_file
from tower_platform.registry.migration import CONNECTION_ATTRIBUTE, URL_ATTRIBUTE
from tower_platform.registry.schema import metadata

config = context.config


def _url() -> str:
    url = config.attributes.get(URL_ATTRIBUTE) or config.get_main_option("sqlalchemy.url")
    if url:
        return str(url)
    from tower_platform.settings import get_settings

    return get_settings().registry_url


def _configure(**kwargs: Any) -> None:
    context.configure(target_metadata=metadata, compare_type=True, **kwargs)


def run_offline() -> None:
    url = parse_url(_url())
    _configure(url=url, literal_binds=True, render_as_batch=url.get_backend_name() == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get(CONNECTION_ATTRIBUTE)
    if connection is not None:
        _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        return
    url = _url()
    database_file = sqlite_file(parse_url(url))
    if database_file is not None:
        database_file.parent.mkdir(parents=True, exist_ok=True)
    engine = create_registry_engine(url)
    try:
        with engine.begin() as own_connection:
            _configure(connection=own_connection, render_as_batch=own_connection.dialect.name == "sqlite")
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
