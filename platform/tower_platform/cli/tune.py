"""``towerctl tune``: an Optuna study of training settings on the validation stage, the best written into a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tower_platform.cli import context
from tower_platform.cli.output import err_console, print_json, print_table
from tower_platform.cli.train import config_path, parse_overrides
from tower_platform.settings import get_settings


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short(metric: str) -> str:
    return "R@100" if metric == "recall@100" else metric


def print_trials(result: dict[str, Any]) -> None:
    """One row per trial (the base config's own settings marked): state, the validation objective, each constrained
    figure and whether the trial met the constraints, epochs, seconds, then the value of each searched key."""
    from tower_platform.pipeline.tune import Constraint

    keys = list(result["space"])
    objective = result.get("metric", "validation recall@100").removeprefix("validation ")
    constrained = sorted({Constraint.parse(c).metric for c in result.get("constraints", [])} - {objective})
    headers = ["trial", "state", f"val {_short(objective)}", *(f"val {_short(m)}" for m in constrained),
               *(["meets"] if result.get("constraints") else []), "epochs", "best epoch", "seconds",
               *(k.split(".", 1)[1] for k in keys)]
    rows = []
    for trial in result["trials"]:
        best = result["best"] is not None and trial["number"] == result["best"]["number"]
        mark = (" *" if best else "") + (" (base)" if trial.get("origin") == "base config" else "")
        figures = trial.get("figures", {})
        rows.append([f"{trial['number']}{mark}", trial["state"].lower(),
                     "-" if trial["value"] is None else f"{trial['value']:.4f}",
                     *("-" if figures.get(m) is None else f"{figures[m]:.4f}" for m in constrained),
                     *([("yes" if trial.get("feasible") else "no")] if result.get("constraints") else []),
                     _cell(trial["epochs"]),
                     _cell(trial["best_epoch"]), "-" if trial["seconds"] is None else f"{trial['seconds']:.0f}",
                     *(_cell(trial["params"].get(k)) for k in keys)])
    bounds = f" subject to {', '.join(result['constraints'])}" if result.get("constraints") else ""
    print_table(f"study {result['study']}: validation {objective} per trial{bounds} (* best)", headers, rows)


def tune_command(
    config: Path | None = typer.Option(None, "--config", help="Dataset config YAML (default: the bundled MovieLens latest-small)."),
    trials: int = typer.Option(20, "--trials", min=1, help="Trials to run now (added to the study's earlier ones)."),
    timeout: float | None = typer.Option(None, "--timeout", min=1, help="Start no new trial after this many seconds."),
    out: Path | None = typer.Option(None, "--out", help="Config file to write with the best settings "
                                    "(default: $TOWER_HOME/tuning/<study>.yaml)."),
    overrides: list[str] = typer.Option([], "--set", help="Fix a training setting for every trial: --set max_steps=50 (repeatable)."),
    space_file: Path | None = typer.Option(None, "--space", help="YAML search space replacing the default one."),
    study_name: str | None = typer.Option(None, "--study", help="Study name (default: tune-<dataset>); an existing study resumes."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the config and the search space, print the space, train nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    objective: str = typer.Option("recall@100", "--objective",
                                  help="Validation figure to maximise: recall@10|50|100, ndcg@10|50, mrr, "
                                       "recall@100_per_user, recall@100_head|torso|tail, worst_category_recall@100."),
    constraint_texts: list[str] = typer.Option([], "--constraint",
                                               help="A bound the best trial must meet, e.g. "
                                                    "--constraint 'recall@100_tail>=0.05' (repeatable)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds per trial: its figures are their means."),
) -> None:
    """Tune training settings on validation Recall@100 or another --objective, under --constraint bounds (TPE, median
    pruning per epoch); test data is never used."""
    from tower_platform.datasets.config import load_dataset_config
    from tower_platform.features.training_set import build_training_set
    from tower_platform.naming import tuning_study_name
    from tower_platform.pipeline.config import tower_config_from
    from tower_platform.pipeline.search_space import SearchSpace, default_space
    from tower_platform.pipeline.train import split_times
    from tower_platform.pipeline.tune import Constraint, ValidationStage, check_figure, run_study, write_tuned_config

    settings = get_settings()
    check_figure(objective, what="--objective")
    constraints = tuple(Constraint.parse(text) for text in constraint_texts)
    path = config_path(config)
    dataset = load_dataset_config(path)
    base = tower_config_from(dataset, overrides=parse_overrides(overrides))
    space = SearchSpace.from_file(space_file) if space_file is not None else default_space(base)
    space.check_against(base, where=f"Search space {space_file}" if space_file else "The default search space")
    name = study_name or tuning_study_name(dataset.name)
    target = Path(out) if out is not None else settings.tuning_dir / f"{name}.yaml"
    if dry_run:
        plan = {"study": name, "storage": settings.tuning_storage_url, "out": str(target), "trials": trials,
                "objective": objective, "constraints": [str(c) for c in constraints], "seeds": seeds,
                "space": space.to_dict()}
        if as_json:
            print_json(plan)
        else:
            print_table(f"study {name}: search space (dry run, nothing trained)", ["key", "parameter"],
                        [[key, ", ".join(f"{k} {v}" for k, v in p.items())] for key, p in plan["space"].items()])
        return

    store = context.feature_store(settings)
    training_set = build_training_set(store, dataset)
    validation_time, _ = split_times(training_set)
    stage = ValidationStage.build(training_set, corpus=store.item_corpus(validation_time))
    settings.tuning_dir.mkdir(parents=True, exist_ok=True)
    err_console.print(f"study {name} in {settings.tuning_storage_url}: {trials} trials on "
                      f"{stage.train.num_rows:,} train rows, validation {objective} of "
                      f"{stage.data.rows('validation').size:,} validation interactions", highlight=False)
    result = run_study(stage, base, space, study_name=name, storage=settings.tuning_storage_url, trials=trials,
                       timeout_s=timeout, echo=lambda m: err_console.print(m, highlight=False), objective=objective,
                       constraints=constraints, seeds=seeds)
    if result.best is not None:
        bounds = f" (subject to {', '.join(result.constraints)})" if result.constraints else ""
        header = (f"{path.name} with the best settings of study {name} (towerctl tune): trial {result.best['number']}, "
                  f"validation {objective} {result.best['value']:.4f}{bounds}\nfrom {path.resolve()}")
        result.out = str(write_tuned_config(dataset, settings={**parse_overrides(overrides), **result.best["params"]},
                                            out=target, header=header))
    if as_json:
        print_json(result.to_dict())
        return
    print_trials(result.to_dict())
    if result.out:
        err_console.print(f"best settings written to {result.out}; train with `towerctl train --config {result.out}`",
                          highlight=False)
    elif result.constraints:
        err_console.print(f"no completed trial meets {', '.join(result.constraints)}; nothing written (loosen a bound "
                          "or run more trials: the study resumes)", highlight=False)
    else:
        err_console.print("no trial completed; nothing written", highlight=False)
