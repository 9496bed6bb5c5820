"""``towerctl train`` and ``towerctl evaluate``: train two towers on a dataset's point-in-time training set, evaluate
them with the next-item protocol (full corpus, no sampling) beside classical baselines, and export ONNX towers.

``train --nproc N`` trains on N processes (DistributedDataParallel); started by torchrun (``torchrun --nproc-per-node N
-m tower_platform train ...``) the command is one rank of such a run (``tower_platform.pipeline.data_parallel``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from tower_platform.cli import context
from tower_platform.cli.context import open_registry
from tower_platform.cli.output import err_console, print_json, print_table
from tower_platform.settings import get_settings

_CONFIG = typer.Option(None, "--config", help="Dataset config YAML (default: the bundled MovieLens latest-small).")
_JSON = typer.Option(False, "--json", help="Print the result as JSON.")
# Help texts are rich markup: a literal '[' is written '\\[' (tests/unit/platform/cli/test_cli_noise.py checks them all).
SET_HELP = (r"Override a training setting, dotted or by its unambiguous name: --set epochs=3, "
            r"--set towers.hidden_dims=\[128,64] (repeatable; values are YAML).")


def config_path(config: Path | None) -> Path:
    from tower_platform.paths import bundled_config

    return Path(config) if config is not None else bundled_config()


def print_metrics(title: str, reports: dict[str, Any], *, as_json: bool) -> None:
    """Headline figures with one column per model and one row per metric (narrow enough for any terminal)."""
    from tower_platform.pipeline.train import metrics_rows

    if as_json:
        print_json({name: report.to_dict() for name, report in reports.items()})
        return
    columns, rows = metrics_rows(reports)
    print_table(title, ["metric", *(row[0] for row in rows)],
                [[metric, *(row[i] for row in rows)] for i, metric in enumerate(columns) if i > 0])


def parse_overrides(values: list[str]) -> dict[str, Any]:
    """``--set epochs=3 --set hidden_dims=[128]`` -> {"epochs": 3, "hidden_dims": [128]} (values parsed as YAML)."""
    import yaml

    from tower_platform.errors import UsageError

    overrides: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r} must look like KEY=VALUE, e.g. --set epochs=3.")
        try:
            overrides[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            problem = str(getattr(exc, "problem", None) or "unparsable")
            raise UsageError(
                f"--set {item}: the value is not valid YAML ({problem}); write numbers as 3 or 0.01, lists as [128, 64] "
                "and quote strings that hold ':' or brackets."
            ) from None
    return overrides


def written_as(values: list[str]) -> dict[str, str]:
    """Each ``--set`` key -> the text typed for it (``epochs=abc``), for messages."""
    return {item.partition("=")[0].strip(): item for item in values}


def train_command(
    ctx: typer.Context,
    config: Path | None = _CONFIG,
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="Refit on train + validation before the test stage."),
    register: bool = typer.Option(False, "--register", help="Register the export as the model's next version."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train on N local processes (DistributedDataParallel, gloo on "
                              "CPU, NCCL on GPUs); batch_size is per process."),
    as_json: bool = _JSON,
) -> None:
    """Build the training set, train (early stopping on validation Recall@100), evaluate, export to artifacts/."""
    from tower_platform.pipeline.data_parallel import launch_ranks, launched_by_torchrun

    if nproc > 1:
        if launched_by_torchrun():
            from tower_platform.errors import UsageError

            raise UsageError("--nproc starts the processes itself; under torchrun leave it out (torchrun's "
                             "--nproc-per-node sets the number of processes).")
        _checked_settings(config, overrides)  # a bad config or --set is refused here, before any process starts
        arguments = ["train", *(["--config", str(Path(config).resolve())] if config is not None else [])]
        arguments += [value for item in overrides for value in ("--set", item)]
        arguments += ["--refit" if refit else "--no-refit", *(["--register"] if register else []),
                      *(["--json"] if as_json else [])]
        verbose = ctx.find_root().params.get("verbose")
        launch_ranks(nproc, ["--verbose", *arguments] if verbose else arguments)
        return
    if not launched_by_torchrun():
        _train(config, overrides, refit=refit, register=register, as_json=as_json)
        return
    from tower_platform.pipeline.data_parallel import RankZeroFit, follow_rank0
    from towers.training import DataParallel

    with DataParallel.from_environment() as data_parallel:
        if not data_parallel.is_main:
            follow_rank0(data_parallel)
            return
        err_console.print(f"data-parallel run on {data_parallel.world_size} processes: rank 0 builds the training set,"
                          " evaluates and exports; every rank trains its share of each batch", highlight=False)
        fit = RankZeroFit(data_parallel)
        try:
            _train(config, overrides, refit=refit, register=register, as_json=as_json, fit=fit)
        finally:
            fit.finish()


def _checked_settings(config: Path | None, overrides: list[str]) -> Any:
    """The dataset config and its tower config with ``--set`` applied, each checked (refusals name the key)."""
    from tower_platform.datasets.config import load_dataset_config
    from tower_platform.pipeline.config import tower_config_from

    dataset = load_dataset_config(config_path(config))
    return dataset, tower_config_from(dataset, overrides=parse_overrides(overrides), written_as=written_as(overrides))


def _train(config: Path | None, overrides: list[str], *, refit: bool, register: bool, as_json: bool,
           fit: Any = None) -> None:
    from tower_platform.pipeline.export import export_version
    from tower_platform.pipeline.train import train_and_evaluate
    from tower_platform.features.training_set import build_training_set

    settings = get_settings()
    dataset, tower_config = _checked_settings(config, overrides)
    context.writable_home(settings)
    store = context.feature_store(settings)
    training_set = build_training_set(store, dataset)
    trained = train_and_evaluate(training_set, store, config=tower_config, refit=refit,
                                 echo=lambda m: err_console.print(m, highlight=False), fit=fit)
    with open_registry(write=True, settings=settings) as registry:
        version = registry.next_version(dataset.model)
    run = datetime.now(UTC).strftime("run-%Y%m%dT%H%M%SZ")
    exported = export_version(trained, training_set, store.item_corpus(datetime.now(UTC)), model=dataset.model,
                              version=version, artifacts_dir=settings.artifacts_dir, folder_name=run)
    registered = None
    if register:
        from tower_platform.pipeline.register import register_export

        with open_registry(write=True, settings=settings) as registry:
            registered = register_export(registry, exported.folder, model=dataset.model,
                                         actor=context.current_actor(), reason="towerctl train --register")
    reports = {"two-tower (validation)": trained.validation, "two-tower (test)": trained.test}
    if as_json:
        print_json({"export": str(exported.folder), "version": version, "sha256": exported.sha256,
                    "parity_max_abs_diff": exported.max_abs_diff, "registered": registered is not None,
                    "metrics": trained.metrics()})
        return
    print_metrics(f"{dataset.model}: next-item protocol, full corpus", reports, as_json=False)
    hint = (f"registered as {dataset.model} v{registered.version}" if registered is not None
            else f"register it with `towerctl models register {exported.folder}`")
    err_console.print(f"exported to {exported.folder} (parity max abs diff {exported.max_abs_diff:.2e}); {hint}",
                      highlight=False)


def evaluate_command(
    config: Path | None = _CONFIG,
    artifact_dir: Path | None = typer.Option(None, "--artifacts", help="An export folder to evaluate (towers.pt)."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines",
                                   help="Also run MostPopular (all time and recent windows), ItemKNN, EASE."),
    ease_l2: float = typer.Option(200.0, "--ease-l2", help="EASE regularisation (tune it on validation)."),
    ease_max_items: int | None = typer.Option(
        None, "--ease-max-items", min=0,
        help="EASE covers only the N most interacted fit items (default 10,000; 0: every fit item); "
             "the others are never recommended by it."),
    ease_min_count: int = typer.Option(1, "--ease-min-count", min=1,
                                       help="EASE covers only items with at least this many fit interactions."),
    recent_days: list[float] = typer.Option(
        [], "--recent-days",
        help="MostPopular over the last N days of the fit data (repeatable; default 7 and 30)."),
    stage: str = typer.Option("test", "--stage", help="test (fit on train + validation) or validation (fit on train)."),
    as_json: bool = _JSON,
) -> None:
    """Next-item evaluation (full corpus) of an exported model and/or the classical baselines, in one harness."""
    from tower_platform.datasets.config import load_dataset_config
    from tower_platform.errors import UsageError
    from tower_platform.features.training_set import build_training_set
    from tower_platform.pipeline.train import split_times
    from towers.evaluation import EASE, EASE_MAX_ITEMS, RECENT_WINDOWS_DAYS, EvaluationData, classical_baselines
    from towers.training import TrainedTowers

    if stage not in ("test", "validation"):
        raise UsageError(f"--stage {stage!r} must be 'test' or 'validation'.")
    if artifact_dir is None and not baselines:
        raise UsageError("Nothing to evaluate: pass --artifacts FOLDER and/or --baselines.")
    if any(days <= 0 for days in recent_days):
        raise UsageError(f"--recent-days {min(recent_days):g} must be a number of days > 0, e.g. --recent-days 7.")
    settings = get_settings()
    dataset = load_dataset_config(config_path(config))
    store = context.feature_store(settings)
    training_set = build_training_set(store, dataset)
    validation_time, test_time = split_times(training_set)
    fit = ("train", "validation") if stage == "test" else ("train",)
    corpus = store.item_corpus(test_time if stage == "test" else validation_time)
    data = EvaluationData.build(training_set.table, corpus=corpus, schema=training_set.schema)
    reports: dict[str, Any] = {}
    if baselines:
        max_items = EASE_MAX_ITEMS if ease_max_items is None else (ease_max_items or None)
        models = classical_baselines(ease_l2=ease_l2, ease_max_items=max_items, ease_min_count=ease_min_count,
                                     recent_days=recent_days or RECENT_WINDOWS_DAYS)
        for name, model in models.items():
            reports[name] = data.evaluate_baseline(model, fit_periods=fit, eval_period=stage)
            if isinstance(model, EASE):
                err_console.print(model.describe(), highlight=False)
    if artifact_dir is not None:
        from tower_platform.errors import NotFoundError
        from tower_platform.pipeline.export import CHECKPOINT_FILE

        checkpoint = Path(artifact_dir) / CHECKPOINT_FILE
        if not checkpoint.is_file():
            raise NotFoundError(f"{checkpoint} does not exist; pass a folder written by `towerctl train` or `run`.")
        towers = TrainedTowers.load(checkpoint)
        reports[f"two-tower ({Path(artifact_dir).name})"] = data.evaluate_towers(towers, fit_periods=fit, eval_period=stage)
    print_metrics(f"{dataset.name}: next-item protocol, {stage} stage, full corpus", reports, as_json=as_json)
