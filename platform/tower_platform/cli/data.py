"""``towerctl data`` and ``towerctl features``: ingest a dataset, apply and materialise Feast, build training sets."""

from __future__ import annotations

import typer

from tower_platform.cli import app

data_app = typer.Typer(no_args_is_help=True, help="Dataset ingestion into Feast source tables.")
features_app = typer.Typer(no_args_is_help=True, help="Feast repository: apply, materialize, training sets.")
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
