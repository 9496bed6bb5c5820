"""``towerctl data ingest``: read a dataset with its adapter into the Feast source tables.

The dataset code is imported inside the command: ``towerctl --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tower_platform.cli import context
from tower_platform.cli.output import err_console, print_json, print_mapping

data_app = typer.Typer(no_args_is_help=True, help="Dataset ingestion into Feast source tables.")

CONFIG_HELP = "Dataset config YAML (default: the bundled movielens-latest-small config)."


def load_config(path: Optional[Path]):
    """The dataset config at ``path`` (default: the bundled one)."""
    from tower_platform.datasets.config import load_dataset_config
    from tower_platform.paths import bundled_config

    return load_dataset_config(path if path is not None else bundled_config())


@data_app.command("ingest")
def ingest_command(
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    source: Optional[Path] = typer.Option(None, "--source", help="Folder of the raw dataset files (overrides the config's source)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Read a dataset with its adapter and write the Feast source tables under $TOWER_HOME/sources (re-runnable)."""
    from tower_platform.datasets.ingest import ingest

    settings = context.settings(write=True)
    dataset = load_config(config)
    err_console.print(f"ingesting {dataset.name} into {settings.home_dir / 'sources'}")
    report = ingest(dataset, home_dir=settings.home_dir, source=source)
    if json_output:
        print_json(report.to_dict())
        return
    print_mapping(
        f"ingested {report.dataset}",
        {
            "source": report.source,
            "sources_dir": report.sources_dir,
            "fingerprint": report.source_fingerprint,
            "first_event": report.first_event,
            "last_event": report.last_event,
            "views": ", ".join(report.views),
            **{f"rows.{name}": count for name, count in report.rows.items()},
        },
    )


