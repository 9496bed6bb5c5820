"""``towerctl run`` and ``towerctl quickstart``: the whole main job for one dataset config.

ingest -> feast apply + materialize -> point-in-time training set (audited) -> train -> evaluate -> export ONNX ->
register -> write item vectors into Qdrant -> verify -> promote (with --promote) -> recommend for a sample user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tower_platform.cli import context
from tower_platform.cli.context import current_actor, open_registry, open_vectors
from tower_platform.cli.output import err_console, print_json, print_mapping, print_table
from tower_platform.cli.train import SET_HELP, config_path, parse_overrides, print_metrics, written_as
from tower_platform.settings import get_settings


def _show(step: str, value: Any) -> None:
    """Print each step's result as it completes (results on stdout, diagnostics on stderr)."""
    if step == "ingest":
        print_mapping("ingested", value.to_dict() if hasattr(value, "to_dict") else vars(value))
    elif step == "training_set":
        from tower_platform.cli.features import print_audit

        print_audit(value)
    elif step == "metrics":
        print_metrics("two-tower, next-item protocol (full corpus)",
                      {"validation (fit on train)": value.validation, "test (refit on train+validation)": value.test},
                      as_json=False)
    elif step == "export":
        err_console.print(f"exported {value.folder} (ONNX parity max abs diff {value.max_abs_diff:.2e})", highlight=False)
    elif step == "register":
        err_console.print(f"registered {value.model} v{value.version}", highlight=False)
    elif step == "index":
        print_mapping(f"collection {value.collection}", vars(value))
    elif step == "alignment":
        from tower_platform.cli.monitor import print_alignment_report

        print_alignment_report(value)
    elif step == "promote":
        err_console.print(f"promoted: alias '{value.alias}' -> {value.collection}", highlight=False)
    elif step == "recommend":
        print_table(
            f"{value.model} v{value.version}: top {len(value.items)} for user {value.user_id}",
            ["rank", "item_id", "display", "score", "category", "popularity"],
            [(rank, hit.item_id, hit.payload.get("display"), hit.score, hit.payload.get("category"), hit.payload.get("popularity"))
             for rank, hit in enumerate(value.items, start=1)],
        )


def run_main_job(
    config: Path, *, source: Path | None, overrides: list[str], refit: bool, promote: bool, force: bool = False,
    actor: str | None, reason: str | None, as_json: bool,
) -> None:
    from tower_platform.datasets.config import load_dataset_config
    from tower_platform.pipeline.config import tower_config_from
    from tower_platform.pipeline.run import run_pipeline

    settings = get_settings()
    training_overrides = parse_overrides(overrides)
    # Every setting is checked before anything is ingested, trained or written.
    tower_config_from(load_dataset_config(config), overrides=training_overrides, written_as=written_as(overrides))
    context.writable_home(settings)
    settings.export_environment()
    result = run_pipeline(
        config,
        home_dir=settings.home_dir,
        repo_dir=settings.feature_repo_dir,
        artifacts_dir=settings.artifacts_dir,
        open_registry=lambda: open_registry(write=True, settings=settings),
        open_vectors=lambda: open_vectors(settings),
        source=source,
        training_overrides=training_overrides,
        refit=refit,
        promote=promote,
        force=force,
        monitor_config=settings.monitor_config,
        actor=actor or current_actor(),
        reason=reason,
        progress=not as_json,
        echo=lambda message: err_console.print(message, highlight=False, markup=False),
        show=(lambda _s, _v: None) if as_json else _show,
    )
    if as_json:
        print_json({
            "dataset": result.dataset,
            "model": result.model,
            "version": result.version,
            "fingerprint": result.training_set.fingerprint,
            "audit": result.training_set.audit.to_dict(),
            "metrics": result.trained.metrics(),
            "artifacts": str(result.exported.folder),
            "collection": vars(result.indexed),
            "promoted": result.promotion is not None,
            "gates": None if result.promotion is None or result.promotion.verdict is None else {
                "gate": result.promotion.verdict.gate,
                "passed": result.promotion.verdict.passed,
                "breaches": list(result.promotion.verdict.breaches),
                "measured": (result.promotion.verdict.details or {}).get("measured", True),
            },
            "recommendations": None if result.recommendations is None else {
                "user_id": result.sample_user,
                "items": [{"item_id": h.item_id, "score": h.score, **h.payload} for h in result.recommendations.items],
            },
        })


def run_command(
    config: Path = typer.Option(..., "--config", help="Dataset config YAML."),
    source: Path | None = typer.Option(None, "--source", help="Raw dataset folder (overrides the config's source)."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="Refit on train + validation before the test stage."),
    promote: bool = typer.Option(False, "--promote", help="Promote the new version when it is indexed and passes the "
                                 "alignment gates."),
    force: bool = typer.Option(False, "--force", help="With --promote: promote despite breached gates (needs --reason)."),
    actor: str | None = typer.Option(None, "--actor", help="Who runs this, for the audit log (default: OS user)."),
    reason: str | None = typer.Option(None, "--reason", help="Why, for the audit log."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """The whole pipeline for one dataset config; registers a new version (and promotes it with --promote)."""
    run_main_job(config, source=source, overrides=overrides, refit=refit, promote=promote,
                 force=force, actor=actor, reason=reason, as_json=as_json)


def quickstart_command(
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """`run --promote` on the bundled MovieLens dataset in the embedded default ($TOWER_HOME, no servers)."""
    run_main_job(config_path(None), source=None, overrides=overrides, refit=True, promote=True,
                 actor=None, reason="quickstart", as_json=as_json)
