"""``towerctl db upgrade|current|downgrade``: the registry schema, migrated by the packaged Alembic revisions.

Commands that read the registry refuse a schema that is not at head and name ``towerctl db upgrade``. One exception,
for a first run on one machine: a command that WRITES to the registry (``models register``, for instance) creates the
schema itself when the registry is the default SQLite file (``$TOWER_HOME/registry.db``, no ``TOWER_DATABASE_URL``)
and that file is missing or holds no table. An existing schema that is out of date is never upgraded implicitly,
and a database named by ``TOWER_DATABASE_URL`` is only migrated by ``towerctl db upgrade``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from tower_platform.cli.output import print_json, print_mapping
from tower_platform.errors import UsageError
from tower_platform.settings import get_settings

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.migration import SchemaState

db_app = typer.Typer(no_args_is_help=True, help="Registry database schema: upgrade, current, downgrade.")


def _state_payload(url: str, state: SchemaState) -> dict[str, object]:
    from tower_platform.registry.database import redacted_url

    return {
        "database": redacted_url(url),
        "current": list(state.current),
        "head": state.head,
        "at_head": state.at_head,
    }


@db_app.command("upgrade")
def upgrade_command(
    revision: str = typer.Option("head", "--revision", help="Target revision (default: the newest)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Create or migrate the registry schema to a revision (default head); safe to re-run."""
    from tower_platform.registry.database import sqlite_file
    from tower_platform.registry.migration import current_state, upgrade_schema

    from tower_platform.cli.context import writable_home
    from tower_platform.paths import writable_folder

    settings = get_settings()
    url = settings.registry_url
    file = sqlite_file(url)
    if file is not None:
        if settings.database_url is None:
            writable_home(settings)
        else:
            writable_folder(file.parent, setting="the folder of TOWER_DATABASE_URL")
        file.parent.mkdir(parents=True, exist_ok=True)
    before = current_state(url)
    after = upgrade_schema(url, revision=revision)
    payload = {**_state_payload(url, after), "before": list(before.current)}
    if as_json:
        print_json(payload)
    else:
        print_mapping("registry schema upgraded", payload)


@db_app.command("current")
def current_command(
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Show the registry's schema revision beside the head this release needs."""
    from tower_platform.errors import SchemaOutOfDateError
    from tower_platform.registry.database import sqlite_file
    from tower_platform.registry.migration import UPGRADE_COMMAND, current_state

    url = get_settings().registry_url
    file = sqlite_file(url)
    if file is not None and not file.is_file():
        raise SchemaOutOfDateError(f"The registry database {file} does not exist yet; run `{UPGRADE_COMMAND}`.")
    payload = _state_payload(url, current_state(url))
    if as_json:
        print_json(payload)
    else:
        print_mapping("registry schema", payload)


@db_app.command("downgrade")
def downgrade_command(
    revision: str = typer.Argument(..., help="Target revision, e.g. base (drops every registry table)."),
    yes: bool = typer.Option(False, "--yes", help="Confirm: a downgrade deletes registry data."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Migrate the registry schema down to a revision (deletes the data of the dropped tables)."""
    from tower_platform.registry.migration import downgrade_schema

    if not yes:
        raise UsageError(f"`towerctl db downgrade {revision}` deletes registry data; add --yes to confirm.")
    url = get_settings().registry_url
    after = downgrade_schema(url, revision=revision)
    payload = _state_payload(url, after)
    if as_json:
        print_json(payload)
    else:
        print_mapping("registry schema downgraded", payload)
