"""``towerctl data`` and ``towerctl features``: ingest a dataset, apply and materialise Feast, build training sets.

Feast, pyarrow and the dataset code are imported inside the commands: ``towerctl --help`` stays fast.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from tower_platform.cli import app
from tower_platform.cli.output import err_console, print_json, print_mapping, print_table

data_app = typer.Typer(no_args_is_help=True, help="Dataset ingestion into Feast source tables.")
features_app = typer.Typer(no_args_is_help=True, help="Feast repository: apply, materialize, training sets.")
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")

_CONFIG_HELP = "Dataset config YAML (default: the bundled movielens-latest-small config)."
_DATETIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def _settings():
    from tower_platform.settings import get_settings

    settings = get_settings()
    settings.export_environment()
    return settings


def _config(path: Optional[Path]):
    from tower_platform.datasets.config import load_dataset_config
    from tower_platform.paths import bundled_config

    return load_dataset_config(path if path is not None else bundled_config())


def _store(settings):
    from tower_platform.features.store import FeastFeatureStore

    return FeastFeatureStore(settings.feature_repo_dir, home_dir=settings.home_dir)


@data_app.command("ingest")
def ingest_command(
    config: Optional[Path] = typer.Option(None, "--config", help=_CONFIG_HELP),
    source: Optional[Path] = typer.Option(None, "--source", help="Folder of the raw dataset files (overrides the config's source)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Read a dataset with its adapter and write the Feast source tables under $TOWER_HOME/sources (re-runnable)."""
    from tower_platform.datasets.ingest import ingest

    settings = _settings()
    dataset = _config(config)
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


@features_app.command("apply")
def apply_command(json_output: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Register entities, feature views and feature services for the ingested sources (re-runnable)."""
    settings = _settings()
    report = _store(settings).apply()
    if json_output:
        print_json(report.to_dict())
        return
    print_mapping(
        "feature repository applied",
        {
            "views": ", ".join(report.views),
            "services": ", ".join(report.services),
            "deleted": ", ".join(report.deleted) or None,
        },
    )


@features_app.command("materialize")
def materialize_command(
    start: Optional[datetime] = typer.Option(None, "--start", formats=_DATETIME_FORMATS, help="Window start, UTC (default: the earliest source row)."),
    end: Optional[datetime] = typer.Option(None, "--end", formats=_DATETIME_FORMATS, help="Window end, UTC (default: now)."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Load the latest feature row per entity within [start, end] into the online store."""
    from tower_platform.features.materialization import materialize

    settings = _settings()
    report = materialize(_store(settings), start=start, end=end)
    if json_output:
        print_json(report.to_dict())
        return
    print_mapping("materialized", {"start": report.start, "end": report.end, "views": ", ".join(report.views)})


@features_app.command("build-training-set")
def build_training_set_command(
    config: Optional[Path] = typer.Option(None, "--config", help=_CONFIG_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the training set to this parquet file."),
    json_output: bool = typer.Option(False, "--json", help="Print the audit as JSON."),
) -> None:
    """Join every interaction with point-in-time features, audit it, and print the audit."""
    from tower_platform.errors import UsageError
    from tower_platform.features.training_set import build_training_set, write_training_set

    if out is not None and out.suffix != ".parquet":
        raise UsageError(f"--out {out} must name a .parquet file.")
    settings = _settings()
    training_set = build_training_set(_store(settings), _config(config))
    if out is not None:
        write_training_set(training_set, out)
        err_console.print(f"wrote {training_set.table.num_rows} rows to {out}")
    if json_output:
        print_json({"audit": training_set.audit.to_dict(), "split": training_set.split.to_dict(),
                    "out": str(out) if out else None})
        return
    print_audit(training_set)


def print_audit(training_set) -> None:
    """The training set's audit: row parity, split, point-in-time checks, fingerprint, null rates per feature."""
    audit = training_set.audit
    print_mapping(
        "training set audit (passed)" if audit.passed else "training set audit",
        {
            "rows_in": audit.rows_in,
            "rows_out": audit.rows_out,
            **{f"split.{name}": size for name, size in audit.split_sizes.items()},
            "validation_cutoff": training_set.split.validation_cutoff,
            "test_cutoff": training_set.split.test_cutoff,
            "future_rows": sum(audit.future_rows.values()),
            "leaked_rows": audit.leaked_rows,
            "fingerprint": audit.fingerprint,
            "services": ", ".join(audit.feature_services),
        },
    )
    print_table("null rates", ["feature", "null rate"], sorted(audit.null_rates.items()))
