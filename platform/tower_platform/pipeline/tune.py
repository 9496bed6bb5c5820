"""Hyper-parameter tuning on the validation stage only: an Optuna study over a search space of training settings.

Each trial trains the towers on the train period with the trial's settings and measures Recall@100 of the next-item
protocol on the validation period after every epoch (the trainer's validation callback, which also drives its early
stopping); the trial's value is its best epoch's figure. The TPE sampler proposes the settings; a median pruner stops
a trial whose figure after an epoch is below the median of earlier trials at that epoch (from the second epoch on,
once a few trials have completed).

Test data is never looked at: :class:`ValidationStage` keeps only the train and validation rows of the training set
(and refuses a table that still holds test rows), the items come as of the validation cutoff, and nothing here reads
the test period. The study lives in an Optuna storage (SQLite under ``$TOWER_HOME`` by default) under its name, so
a stopped study resumes; it records the fingerprint of its base config and space and refuses to resume with others.
A new study's first trial is the base config's own values of the searched keys (``SearchSpace.base_point``), so
the best is never worse than the base. The best settings are written into a copy of the dataset config (its other sections kept) by a temp file and rename.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.errors import ConfigError, InputError
from tower_platform.pipeline.search_space import SearchSpace
from tower_platform.pipeline.train import SPLIT, Echo, period_rows, quiet

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay inside the functions
    from tower_platform.datasets.config import DatasetConfig
    from tower_platform.features.training_set import TrainingSet
    from towers.config import TowerConfig
    from towers.evaluation import EvaluationData
    from towers.features import FeatureSchema

VALIDATION_PERIODS: tuple[str, ...] = ("train", "validation")
METRIC = "recall@100"
TPE_STARTUP_TRIALS = 5  # random trials before TPE models the space
PRUNER_STARTUP_TRIALS = 3  # completed trials before pruning starts
PRUNER_WARMUP_EPOCHS = 1  # never prune on the first epoch's figure
HEARTBEAT_S = 30  # a trial whose process died is marked failed after missing heartbeats
FINGERPRINT_ATTR = "tower_fingerprint"
ORIGIN_ATTR = "origin"  # "base config" on the trial that measured the base config's own settings


@dataclass(frozen=True, eq=False)
class ValidationStage:
    """What tuning may see: the train-period rows to fit on and the train + validation log to rank with."""

    train: pa.Table
    data: EvaluationData  # built from train + validation rows only
    corpus: pa.Table  # items as of the validation cutoff
    schema: FeatureSchema

    @classmethod
    def build(cls, training_set: TrainingSet, *, corpus: pa.Table) -> ValidationStage:
        from towers.evaluation import EvaluationData

        table = period_rows(training_set.table, VALIDATION_PERIODS)
        outside = table.num_rows and not pc.all(pc.is_in(table.column(SPLIT), value_set=pa.array(VALIDATION_PERIODS))).as_py()
        cutoff = training_set.split.test_cutoff
        late = cutoff is not None and table.num_rows and pc.max(table.column("event_timestamp")).as_py() >= cutoff
        if outside or late:
            raise InputError("The tuning stage holds rows of the test period; tuning must never see test rows.")
        train = period_rows(table, ("train",))
        n_validation = table.num_rows - train.num_rows
        if train.num_rows < 2 or n_validation < 1:
            raise InputError(
                f"Tuning needs train and validation rows; the training set has {train.num_rows} train and "
                f"{n_validation} validation rows: widen the time window or the split."
            )
        data = EvaluationData.build(table, corpus=corpus, schema=training_set.schema)
        return cls(train=train, data=data, corpus=corpus, schema=training_set.schema)

    def validation_recall(self, towers: Any) -> float:
        report = self.data.evaluate_towers(towers, fit_periods="train", eval_period="validation")
        return float(report.metrics[METRIC])


@dataclass(frozen=True)
class TrialOutcome:
    best: float
    best_epoch: int | None
    epochs: int


def train_trial(stage: ValidationStage, config: TowerConfig, *, report: Callable[[int, float], None]) -> TrialOutcome:
    """Train on the train period, reporting validation Recall@100 after each epoch (``report`` may raise to stop)."""
    from towers.training import fit_two_tower

    epochs = 0

    def validation(towers: Any) -> float:
        nonlocal epochs
        epochs += 1
        value = stage.validation_recall(towers)
        report(epochs, value)
        return value

    towers = fit_two_tower(stage.train, corpus=stage.corpus, schema=stage.schema, config=config,
                           validation=validation, progress=False)
    history = towers.history
    best = history.best_metric if history is not None and history.best_metric is not None else float("nan")
    return TrialOutcome(best=float(best), best_epoch=history.best_epoch if history else None, epochs=epochs)


@dataclass
class StudyResult:
    study: str
    storage: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    space: dict[str, Any] = field(default_factory=dict)
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "storage": self.storage, "metric": f"validation {METRIC}", "best": self.best,
                "trials": self.trials, "space": self.space, "out": self.out}


def open_study(name: str, *, storage: str, fingerprint: str, seed: int) -> Any:
    """Create or resume the named study; refuse one made for another base config or space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # heartbeats are marked experimental; they are what fails a killed run's trial
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(storage, heartbeat_interval=HEARTBEAT_S, grace_period=2 * HEARTBEAT_S)
    # A resumed study seeds its sampler past the trials it holds, so that it does not propose the same settings again.
    earlier = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(rdb, include_best_trial=False)}
    study = optuna.create_study(
        study_name=name,
        storage=rdb,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed + earlier.get(name, 0), n_startup_trials=TPE_STARTUP_TRIALS),
        # steps are 1-based epochs, and Optuna prunes from step == n_warmup_steps on: the first epoch is never pruned
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                           n_warmup_steps=PRUNER_WARMUP_EPOCHS + 1),
        load_if_exists=True,
    )
    recorded = study.user_attrs.get(FINGERPRINT_ATTR)
    if recorded is None and not study.trials:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    elif recorded != fingerprint:
        raise ConfigError(
            f"Study {name!r} in {storage} was made with another base config or search space; resume it with the "
            "same --config, --set and --space, or pick another --study name."
        )
    return study


def run_study(
    stage: ValidationStage,
    base: TowerConfig,
    space: SearchSpace,
    *,
    study_name: str,
    storage: str,
    trials: int,
    timeout_s: float | None = None,
    echo: Echo = quiet,
) -> StudyResult:
    """Run ``trials`` more trials of the study (or until ``timeout_s``, checked between trials)."""
    import optuna

    space.check_against(base, where="The search space")
    study = open_study(study_name, storage=storage, fingerprint=space.fingerprint(base), seed=base.training.seed)
    if not study.trials:  # a new study measures the base config first (its values of the searched keys)
        point = space.base_point(base)
        if point:
            study.enqueue_trial(point, user_attrs={ORIGIN_ATTR: "base config"})

    def objective(trial: optuna.Trial) -> float:
        settings = space.suggest(trial)
        config = base.with_overrides(settings)
        started = time.perf_counter()

        def report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            trial.set_user_attr("epochs", epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation {METRIC} {value:.4f} after epoch {epoch}")

        try:
            outcome = train_trial(stage, config, report=report)
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - started)
        trial.set_user_attr("best_epoch", outcome.best_epoch)
        return outcome.best

    def announce(_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        echo(f"trial {trial.number}: {trial.state.name.lower()}, validation {METRIC} {value}, "
             f"{trial.user_attrs.get('epochs', 0)} epochs, {trial.user_attrs.get('seconds', 0.0):.0f} s")

    study.optimize(objective, n_trials=trials, timeout=timeout_s, callbacks=[announce], gc_after_trial=True)
    return summarise(study, storage=storage, space=space)


def summarise(study: Any, *, storage: str, space: SearchSpace) -> StudyResult:
    import optuna

    rows = []
    for trial in study.trials:
        intermediate = trial.intermediate_values
        rows.append({
            "number": trial.number,
            "state": trial.state.name,
            "value": trial.value if trial.value is not None else (max(intermediate.values()) if intermediate else None),
            "epochs": trial.user_attrs.get("epochs", len(intermediate)),
            "best_epoch": trial.user_attrs.get("best_epoch"),
            "seconds": trial.user_attrs.get("seconds"),
            "params": dict(trial.params),
            "origin": trial.user_attrs.get(ORIGIN_ATTR, "sampler"),
        })
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    best = None
    if complete:
        top = max(complete, key=lambda t: t.value)
        best = {"number": top.number, "value": top.value, "params": dict(top.params),
                "best_epoch": top.user_attrs.get("best_epoch")}
    return StudyResult(study=study.study_name, storage=storage, trials=rows, best=best, space=space.to_dict())


# --- the tuned config -----------------------------------------------------------------------------------------------


def tuned_config_text(dataset: DatasetConfig, *, settings: dict[str, Any], out: Path, header: str) -> str:
    """The dataset config's YAML with ``settings`` (dotted TowerConfig keys) written into its ``training`` section.

    Every other section is kept as it was; relative paths (``source``, ``feast.repo`` and ``feast.interactions``)
    are made absolute when ``out`` lies in another folder than the original, so the copy reads the same data.
    """
    import yaml

    from towers.config import resolve_key

    if dataset.path is None:
        raise ConfigError("The dataset config has no file to copy; load it with load_dataset_config(path).")
    original = Path(dataset.path)
    raw = yaml.safe_load(original.read_text(encoding="utf-8"))
    training = raw.get("training") or {}
    if not isinstance(training, dict):
        raise ConfigError(f"Dataset config {original}: section 'training' must be a mapping.")
    for key, value in settings.items():
        section, name = resolve_key(key)
        values = training.get(section) or {}
        values[name] = value
        training[section] = values
    raw["training"] = training
    if Path(out).resolve().parent != original.resolve().parent:
        folder = original.resolve().parent
        if raw.get("interactions") is not None and not Path(str(raw.get("source") or ".")).is_absolute():
            raw["source"] = str((folder / str(raw.get("source") or ".")).resolve())
        feast = raw.get("feast")
        if isinstance(feast, dict):
            for key in ("repo", "interactions"):
                if key in feast and not Path(str(feast[key])).is_absolute():
                    feast[key] = str((folder / str(feast[key])).resolve())
    lines = "".join(f"# {line}\n" for line in header.splitlines())
    return lines + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def write_tuned_config(dataset: DatasetConfig, *, settings: dict[str, Any], out: Path, header: str) -> Path:
    """Write :func:`tuned_config_text` to ``out`` atomically (a temp file beside it, then a rename)."""
    out = Path(out)
    text = tuned_config_text(dataset, settings=settings, out=out, header=header)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
