"""``towerctl``: the root app of the admin CLI.

One sub-app per noun (``data``, ``features``, ``models``, ``embeddings``, ``db``, ``monitor``) plus the top-level
verbs (``train``, ``evaluate``, ``tune``, ``recommend``, ``run``, ``quickstart``). Errors from :mod:`tower_platform.errors`
are converted once, here at the edge: message to stderr, exit code from the hierarchy, traceback only with
``--verbose``. Heavy imports (feast, torch, qdrant_client) happen inside the commands that need them.
"""

from __future__ import annotations

import sys
import traceback

import typer
from typer.core import TyperGroup

from tower_platform.cli import data, db, embeddings, features, models, monitor, pipeline, recommend, train, tune
from tower_platform.cli import warning_filter
from tower_platform.cli.output import err_console
from tower_platform.errors import TowerError, map_towers_error
from tower_platform.redaction import redact

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
            err_console.print(f"error: {redact(exc.message, secrets=_secrets())}", markup=False, highlight=False)
            raise typer.Exit(exc.exit_code) from None


def _secrets() -> list[str]:
    """The secret values of the settings (masked in any message, as a last net behind the URL redaction)."""
    from tower_platform.settings import get_settings

    try:
        settings = get_settings()
    except TowerError:
        return []
    values = [settings.qdrant.api_key, settings.database_url]
    return [v.get_secret_value() for v in values if v is not None]


app = typer.Typer(
    cls=EdgeGroup,
    no_args_is_help=True,
    add_completion=False,
    help="Tower Platform admin CLI: features, training, model versions, embeddings, promotion and monitoring.",
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Show tracebacks for errors and third-party deprecation warnings."
    ),
) -> None:
    _state["verbose"] = verbose
    warning_filter.install(verbose=verbose)


app.add_typer(data.data_app, name="data")
app.add_typer(features.features_app, name="features")
app.command("train")(train.train_command)
app.command("evaluate")(train.evaluate_command)
app.command("tune")(tune.tune_command)
app.add_typer(models.models_app, name="models")
app.add_typer(embeddings.embeddings_app, name="embeddings")
app.command("recommend")(recommend.recommend_command)
app.add_typer(db.db_app, name="db")
app.add_typer(monitor.monitor_app, name="monitor")
app.command("run")(pipeline.run_command)
app.command("quickstart")(pipeline.quickstart_command)


def main() -> None:
    app(prog_name="towerctl")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
