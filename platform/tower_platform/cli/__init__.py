"""``towerctl``: the admin CLI.

One sub-app per noun (``data``, ``features``, ``models``, ``embeddings``, ``db``, ``monitor``) plus the top-level
verbs (``train``, ``evaluate``, ``recommend``, ``run``, ``quickstart``). Errors from :mod:`tower_platform.errors`
are converted once, here at the edge: message to stderr, exit code from the hierarchy, traceback only with
``--verbose``. Heavy imports (feast, torch, qdrant_client) happen inside the commands that need them.
"""

from __future__ import annotations

import getpass
import sys
import traceback

import typer
from typer.core import TyperGroup

from tower_platform.cli.output import err_console
from tower_platform.errors import TowerError, map_towers_error

_state = {"verbose": False}


class EdgeGroup(TyperGroup):
    """Root group: the one place where a TowerError becomes a message and an exit code."""

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except Exception as caught:  # the platform's errors, and towers' mapped once (errors.map_towers_error)
            exc = caught if isinstance(caught, TowerError) else map_towers_error(caught)
            if exc is None:
                raise
            if _state["verbose"]:
                err_console.print(traceback.format_exc(), markup=False, highlight=False)
            err_console.print(f"error: {exc.message}", markup=False, highlight=False)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=EdgeGroup,
    no_args_is_help=True,
    add_completion=False,
    help="Tower Platform admin CLI: features, training, model versions, embeddings, promotion and monitoring.",
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks for errors."),
) -> None:
    _state["verbose"] = verbose


def current_actor() -> str:
    """The default actor of the audit log: the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def _register() -> None:
    # Sub-apps register themselves on import; each module keeps its heavy imports inside its commands.
    from tower_platform.cli import data as _data  # noqa: F401

    for name in ("train", "models", "embeddings", "db", "monitor", "pipeline"):
        try:
            __import__(f"tower_platform.cli.{name}")
        except ModuleNotFoundError as exc:  # a command module that has not landed yet
            if exc.name != f"tower_platform.cli.{name}":
                raise


_register()


def main() -> None:
    app(prog_name="towerctl")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
