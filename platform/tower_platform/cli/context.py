"""The clients a command needs, each built in exactly one place from the settings.

    settings()          the cached :class:`~tower_platform.settings.Settings` (TOWER_HOME exported for Feast)
    open_registry()     the SQL registry (a writing command may first create an empty default SQLite schema)
    feature_store()     the Feast repository of $TOWER_HOME (feast is imported only when it is used)
    open_vectors()      Qdrant: a server when ``TOWER_QDRANT__URL`` is set, else the embedded engine (qdrant-edge)
                        under $TOWER_HOME/vectors
    current_actor()     the default actor of the audit log

Only the CLI reads settings; everything below it receives these clients as parameters.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING

from tower_platform.cli.output import err_console
from tower_platform.settings import Settings, get_settings

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay inside the functions
    from tower_platform.features.store import FeastFeatureStore
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.points import VectorStore


def settings(*, write: bool = False) -> Settings:
    """The settings of this process, with ``TOWER_HOME`` exported (Feast expands it in feature_store.yaml);
    ``write``: the command writes under $TOWER_HOME, which must be writable (it is created by the first write)."""
    current = get_settings()
    if write:
        writable_home(current)
    current.export_environment()
    return current


def writable_home(settings: Settings) -> Path:
    """$TOWER_HOME, checked (not created): ConfigError (exit 6) when it is not a folder or cannot be written."""
    from tower_platform.paths import writable_folder

    return writable_folder(settings.home_dir, setting="TOWER_HOME")


def current_actor() -> str:
    """The default actor of the audit log: the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def open_registry(*, write: bool = False, settings: Settings | None = None) -> SqlRegistryStore:
    """The registry of these settings; ``write`` may first create the schema of an empty default SQLite file."""
    from tower_platform.registry.store import SqlRegistryStore

    settings = settings or get_settings()
    url = settings.registry_url
    if write and settings.database_url is None:
        writable_home(settings)
        _create_default_schema_if_empty(url)
    return SqlRegistryStore(url, home_dir=settings.home_dir)


def _create_default_schema_if_empty(url: str) -> None:
    from tower_platform.registry.database import sqlite_file
    from tower_platform.registry.migration import current_state, upgrade_schema

    file = sqlite_file(url)
    if file is None:
        return
    if file.is_file() and not current_state(url).empty:
        return  # an existing schema: SqlRegistryStore checks it is at head
    file.parent.mkdir(parents=True, exist_ok=True)
    state = upgrade_schema(url)
    err_console.print(f"created the registry schema (revision {state.head}) in {file}", markup=False, highlight=False)


def feature_store(settings: Settings) -> FeastFeatureStore:
    """The Feast repository of the deployment (feast itself is imported when the store is first used)."""
    from tower_platform.features.materialization import open_feature_store

    settings.export_environment()
    return open_feature_store(repo_dir=settings.feature_repo_dir, home_dir=settings.home_dir)


def open_vectors(settings: Settings) -> VectorStore:
    """The vector store of the deployment (use it as a context manager: the embedded engine keeps the shards it
    opens locked until it is closed)."""
    from tower_platform.vectors.store import open_vector_store

    warn_if_insecure(settings)
    return open_vector_store(settings)


def warn_if_insecure(settings: Settings) -> None:
    """Our one line, instead of the Qdrant client's warning (dropped by cli.warning_filter), when an API key would
    travel over plain http."""
    url = settings.qdrant.url
    if url and settings.qdrant.api_key is not None and url.lower().startswith("http://"):
        from tower_platform.redaction import redact_url

        err_console.print(
            f"warning: the Qdrant API key travels unencrypted to {redact_url(url)} (plain http); use an https:// URL "
            "in TOWER_QDRANT__URL.", markup=False, highlight=False,
        )
