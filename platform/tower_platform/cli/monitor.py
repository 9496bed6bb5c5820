"""``towerctl monitor alignment|history``: how well a model version serves every item category.

``monitor alignment`` measures a version (its Qdrant collection and query tower on its test queries), compares it
with production, stores the report in the registry and prints its summary (``--json`` / ``--out FILE.json``: every
segment); a breached gate exits with code 10 (:class:`MonitorBreachError`) after printing, so that a cron job can
watch production. ``monitor history`` shows the worst category of each version's latest report. Thresholds and
pooling: see :mod:`tower_platform.monitor.thresholds`.

The helpers :func:`print_alignment_report` (from :mod:`tower_platform.cli.monitor_report`) and
:func:`alignment_gate` are shared with ``models promote`` and ``towerctl run --promote``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tower_platform.cli.arguments import MODEL_ARGUMENT
from tower_platform.cli.context import current_actor, open_registry, open_vectors
from tower_platform.cli.monitor_report import (
    full_report_command,
    print_alignment_report,
    report_payload,
    write_payload,
)
from tower_platform.cli.output import err_console, format_cell, print_json, print_table
from tower_platform.errors import MonitorBreachError, NotFoundError
from tower_platform.settings import get_settings

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.monitor.gate import AlignmentGate
    from tower_platform.monitor.inputs import MonitorInputs
    from tower_platform.monitor.thresholds import MonitorThresholds
    from tower_platform.registry.entities import AlignmentReport
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.settings import Settings
    from tower_platform.vectors.store import QdrantVectorStore

monitor_app = typer.Typer(no_args_is_help=True, help="Category alignment of model versions and its promotion gates.")


def _echo(line: str) -> None:
    err_console.print(line, markup=False, highlight=False)


# --- shared helpers ------------------------------------------------------------------------------------------------


def load_cli_thresholds(*, settings: Settings, dataset_config: Path | None = None) -> MonitorThresholds:
    """Defaults, the ``monitor`` section of ``dataset_config`` (when given), then ``TOWER_MONITOR_CONFIG``."""
    from tower_platform.monitor.thresholds import load_thresholds

    section = None
    if dataset_config is not None:
        from tower_platform.datasets.config import load_dataset_config

        section = load_dataset_config(dataset_config).extra.get("monitor")
    return load_thresholds(dataset_section=section, path=settings.monitor_config)


def alignment_gate(
    registry: SqlRegistryStore,
    vectors: QdrantVectorStore,
    *,
    thresholds: MonitorThresholds,
    actor: str,
    inputs: MonitorInputs | None = None,
    show: bool = True,
    record: bool = True,
) -> AlignmentGate:
    """The gate ``promote(..., gate=...)`` takes; with ``show`` it prints the report it judged (to stdout), with
    ``record=False`` (a dry run) it stores no report."""
    from tower_platform.monitor.gate import AlignmentGate

    return AlignmentGate(
        registry, vectors, thresholds=thresholds, actor=actor, inputs=inputs, echo=_echo, record=record,
        on_report=(lambda report: print_alignment_report(report, thresholds=thresholds)) if show else None,
    )


# --- commands ------------------------------------------------------------------------------------------------------


def _default_version(registry: SqlRegistryStore, model: str) -> int:
    production = registry.production_version(model)
    if production is not None:
        return production.version
    versions = [v for v in registry.list_versions(model) if v.collection is not None]
    if not versions:
        raise NotFoundError(f"Model '{model}' has no version with a collection; run `towerctl embeddings write` first.")
    return versions[-1].version


def _stored_report(registry: SqlRegistryStore, model: str, version: int, run: int | None) -> AlignmentReport:
    reports = registry.alignment_reports(model, version=version)
    chosen = [r for r in reports if r.run == run] if run is not None else reports[-1:]
    if not chosen:
        which = f"run {run}" if run is not None else "stored alignment report"
        runs = f" (its runs: {', '.join(str(r.run) for r in reports)})" if reports else ""
        raise NotFoundError(f"Model '{model}' version {version} has no {which}{runs}; run `towerctl monitor alignment "
                            f"{model} --version {version}` without --stored / --run.")
    return chosen[0]


def breach_error(report: AlignmentReport, *, thresholds: MonitorThresholds) -> MonitorBreachError:
    """One sentence with the counts and where the full list is, then the first ``worst`` breaches, one a line."""
    from tower_platform.monitor.summary import summarise

    summary = summarise(report.segments, thresholds)
    listed = summary.listed()
    more = len(summary.breaches) - len(listed)
    return MonitorBreachError(
        f"Model '{report.model}' version {report.version} fails its alignment gates: {summary.breach_sentence()}; "
        f"{summary.counts_sentence()}; the full list: `{full_report_command(report)}`; fix the model or the "
        "thresholds (TOWER_MONITOR_CONFIG)."
        + "".join(f"\n  - {b.message}" for b in listed) + (f"\n  ... and {more:,} more" if more > 0 else "")
    )


@monitor_app.command("alignment")
def alignment_command(
    model: str = MODEL_ARGUMENT,
    version: int | None = typer.Option(None, "--version", help="Version to measure (default: production, else the latest)."),
    against: str = typer.Option("production", "--against", help="Compare with: production, a version number, or none."),
    training_set: Path | None = typer.Option(
        None, "--training-set", help="A training set parquet to take the test queries from (default: the version's "
        "artifact folder)."),
    config: Path | None = typer.Option(None, "--config", help="Dataset config YAML whose 'monitor' section sets thresholds."),
    stored: bool = typer.Option(False, "--stored", help="Show the latest stored report instead of measuring again."),
    run: int | None = typer.Option(None, "--run", min=1, help="Show this stored run of the version (implies --stored)."),
    plot: Path | None = typer.Option(None, "--plot", help="Also write a PNG: the worst categories and the distribution "
                                     "of all (alignment distance, recall, coverage)."),
    out: Path | None = typer.Option(None, "--out", help="Also write the whole report (every segment) to this .json file."),
    actor: str | None = typer.Option(None, "--actor", help="Who runs it, for the registry (default: the OS user)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report (every segment) as JSON."),
) -> None:
    """Alignment, recall and coverage of a version per category (small ones pooled), head / torso / tail; a summary
    with the worst categories per check (--json: all); exit 10 on a breach."""
    from tower_platform.monitor.gate import artifact_folder
    from tower_platform.monitor.inputs import MonitorInputs
    from tower_platform.monitor.plot import plot_report
    from tower_platform.monitor.thresholds import find_breaches
    from tower_platform.monitor.version_report import build_alignment_report

    settings = get_settings()
    thresholds = load_cli_thresholds(settings=settings, dataset_config=config)
    with open_registry(settings=settings) as registry:
        number = version if version is not None else _default_version(registry, model)
        if stored or run is not None:
            report = _stored_report(registry, model, number, run)
        else:
            candidate = registry.get_version(model, number)
            inputs = (MonitorInputs.read_training_set(training_set) if training_set is not None
                      else MonitorInputs.read(artifact_folder(candidate)))
            with open_vectors(settings) as vectors:
                report = build_alignment_report(
                    registry, vectors, model=model, version=number, inputs=inputs, thresholds=thresholds,
                    actor=actor or current_actor(), against=against, echo=_echo,
                )
    breaches = find_breaches(report.segments, thresholds)
    if as_json:
        print_json(report_payload(report, thresholds=thresholds))
    else:
        print_alignment_report(report, thresholds=thresholds)
    if out is not None:
        _echo(f"wrote {write_payload(report_payload(report, thresholds=thresholds), out)}")
    if plot is not None:
        written = plot_report(report, plot, thresholds=thresholds)
        _echo(f"wrote {written}")
    if breaches:
        raise breach_error(report, thresholds=thresholds)


def _worst(report: AlignmentReport, *, min_queries: int) -> dict[str, Any]:
    categories = [s for s in report.by_kind("category") if not s.pooled] or list(report.by_kind("category"))
    measured = [s for s in categories if s.recall is not None and s.n_queries >= min_queries] or \
        [s for s in categories if s.recall is not None]
    worst = min(measured, key=lambda s: (s.recall, s.segment)) if measured else None
    lowest = min(categories, key=lambda s: (s.coverage, s.segment)) if categories else None
    farthest = max((s for s in categories if s.relative_alignment is not None),
                   key=lambda s: (s.relative_alignment, s.segment), default=None)
    return {
        "version": report.version,
        "run": report.run,
        "created_at": report.created_at,
        "against_version": report.against_version,
        "worst_category": worst.segment if worst else None,
        "worst_recall": worst.recall if worst else None,
        "worst_queries": worst.n_queries if worst else None,
        "lowest_coverage_category": lowest.segment if lowest else None,
        "lowest_coverage": lowest.coverage if lowest else None,
        "farthest_category": farthest.segment if farthest else None,
        "farthest_distance": farthest.relative_alignment if farthest else None,
        "breaches": len(report.breaches),
    }


@monitor_app.command("history")
def history_command(
    model: str = MODEL_ARGUMENT,
    config: Path | None = typer.Option(None, "--config", help="Dataset config YAML whose 'monitor' section sets thresholds."),
    as_json: bool = typer.Option(False, "--json", help="Print the trend as JSON."),
) -> None:
    """The worst category of each version's latest alignment report, version by version (the trend)."""
    settings = get_settings()
    thresholds = load_cli_thresholds(settings=settings, dataset_config=config)
    with open_registry(settings=settings) as registry:
        reports = registry.alignment_reports(model)
    latest: dict[int, AlignmentReport] = {}
    for report in reports:
        latest[report.version] = report  # reports come by version then run: the last one wins
    rows = [_worst(latest[v], min_queries=thresholds.min_queries) for v in sorted(latest)]
    previous = None
    for row in rows:
        recall = row["worst_recall"]
        row["trend"] = None if previous is None or recall is None else recall - previous
        previous = recall if recall is not None else previous
    if as_json:
        print_json(rows)
        return
    print_table(
        f"{model}: worst category per version (latest report of each)",
        ["version", "run", "at", "against", "worst category", "recall@K", "trend", "lowest coverage", "farthest",
         "breaches"],
        [[r["version"], r["run"], r["created_at"], r["against_version"], f"{r['worst_category']} ({r['worst_queries']} q)",
          r["worst_recall"], None if r["trend"] is None else f"{r['trend']:+.4f}",
          f"{r['lowest_coverage_category']}: {format_cell(r['lowest_coverage'])}",
          f"{r['farthest_category']}: {format_cell(r['farthest_distance'])}", r["breaches"]] for r in rows],
        highlight_rows={i for i, r in enumerate(rows) if r["breaches"]},
    )
