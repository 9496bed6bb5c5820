"""``towerctl features apply|materialize|build-training-set``: the Feast repository of $TOWER_HOME.

Feast and pyarrow are imported inside the commands: ``towerctl --help`` stays fast.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from tower_platform.cli import context
from tower_platform.cli.data import CONFIG_HELP, load_config
from tower_platform.cli.output import err_console, print_json, print_mapping, print_table

features_app = typer.Typer(no_args_is_help=True, help="Feast repository: apply, materialize, training sets.")

_DATETIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


@features_app.command("apply")
def apply_command(json_output: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Register entities, feature views and feature services for the ingested sources (re-runnable)."""
    settings = context.settings(write=True)
    report = context.feature_store(settings).apply()
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
    r"""Load the latest feature row per entity within \[start, end] into the online store."""  # \[: not rich markup
    from tower_platform.features.materialization import materialize

    settings = context.settings(write=True)
    report = materialize(context.feature_store(settings), start=start, end=end)
    if json_output:
        print_json(report.to_dict())
        return
    print_mapping("materialized", {"start": report.start, "end": report.end, "views": ", ".join(report.views)})


@features_app.command("build-training-set")
def build_training_set_command(
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the training set to this parquet file."),
    json_output: bool = typer.Option(False, "--json", help="Print the audit as JSON."),
) -> None:
    """Join every interaction with point-in-time features, audit it, and print the audit."""
    from tower_platform.errors import UsageError
    from tower_platform.features.training_set import build_training_set, write_training_set

    if out is not None and out.suffix != ".parquet":
        raise UsageError(f"--out {out} must name a .parquet file.")
    settings = context.settings()
    training_set = build_training_set(context.feature_store(settings), load_config(config))
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
