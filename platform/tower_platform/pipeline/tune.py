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

The objective is validation Recall@100 unless another headline figure is named (``objective``: e.g.
``recall@100_tail``); ``constraints`` are floors or ceilings on other figures (``recall@100_tail>=0.05``): each
trial records how far its best epoch is from each bound (``Trial.set_constraint``, which the TPE sampler models), and
the best trial is the best one that meets them all (none when no trial does). Early stopping and a trial's best
epoch follow the objective over the epochs that meet every bound (``epoch_score``), pruning the objective; the
pruner's median is over the completed trials that met every bound (``pruning.py``). ``seeds`` > 1
trains every trial with that many seeds and scores the means (validation figures of one seed move by about .01 here,
as much as many settings differ).
"""

from __future__ import annotations

import math
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
# the validation figures an objective or a constraint may name (EvaluationReport.headline keys)
FIGURES: tuple[str, ...] = ("recall@10", "recall@50", "recall@100", "ndcg@10", "ndcg@50", "mrr", "recall@100_per_user",
                            "recall@100_head", "recall@100_torso", "recall@100_tail", "worst_category_recall@100")
CATEGORY_FIGURES: frozenset[str] = frozenset({"worst_category_recall@100"})  # need the items' category feature
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
        return self.validation_figures(towers)[METRIC]

    def validation_figures(self, towers: Any) -> dict[str, float]:
        """The validation figures of ``FIGURES`` for ``towers`` (fit on train, ranked on validation)."""
        report = self.data.evaluate_towers(towers, fit_periods="train", eval_period="validation")
        headline = report.headline()  # no worst-category figure when no category has enough validation queries
        return {name: float(headline.get(name, math.nan)) for name in FIGURES}


@dataclass(frozen=True)
class Constraint:
    """A bound on a validation figure: ``metric >= bound`` (a floor) or ``metric <= bound`` (a ceiling)."""

    metric: str
    floor: bool
    bound: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        for operator, floor in ((">=", True), ("<=", False)):
            metric, found, bound = text.partition(operator)
            if found:
                metric = check_figure(metric.strip(), what=f"constraint {text!r}")
                try:
                    return cls(metric=metric, floor=floor, bound=float(bound))
                except ValueError:
                    break
        raise ConfigError(f"constraint {text!r}: write METRIC>=VALUE or METRIC<=VALUE, e.g. recall@100_tail>=0.05.")

    def violation(self, figures: dict[str, float]) -> float:
        """How far ``figures`` are from meeting the bound (<= 0: met)."""
        value = figures[self.metric]
        return self.bound - value if self.floor else value - self.bound

    def __str__(self) -> str:
        return f"{self.metric}{'>=' if self.floor else '<='}{self.bound:g}"


def check_figure(name: str, *, what: str) -> str:
    """``name`` if it is a validation figure, else a ConfigError that lists them."""
    if name not in FIGURES:
        raise ConfigError(f"{what}: {name!r} is not a validation figure; use one of {', '.join(FIGURES)}.")
    return name


@dataclass(frozen=True)
class TrialOutcome:
    best: float
    best_epoch: int | None
    epochs: int
    figures: dict[str, float] = field(default_factory=dict)  # the validation figures of the best epoch


def epoch_score(figures: dict[str, float], objective: str, constraints: tuple[Constraint, ...] = ()) -> float:
    """What early stopping and a trial's best epoch follow: the ``objective`` figure of an epoch that meets every
    bound; -1 minus the total shortfall of one that does not, so that every epoch meeting the bounds ranks above
    every epoch missing them (the figures lie in [0, 1]) and nearing them still counts as progress. Without it a
    constrained trial kept the epoch of its best objective even where that epoch missed a floor that a later epoch
    met (a worst-category objective peaks before Recall@100 does)."""
    shortfall = sum(max(c.violation(figures), 0.0) for c in constraints)
    return figures[objective] if shortfall <= 0 else -1.0 - shortfall


def train_trial(
    stage: ValidationStage,
    config: TowerConfig,
    *,
    report: Callable[[int, dict[str, float]], None],
    objective: str = METRIC,
    constraints: tuple[Constraint, ...] = (),
) -> TrialOutcome:
    """Train on the train period, reporting the validation figures after each epoch (``report`` may raise to stop);
    early stopping and the best epoch follow ``epoch_score`` (the ``objective`` figure, and first the bounds of
    ``constraints``); the outcome's ``best`` is the best epoch's ``objective`` figure."""
    from towers.training import fit_two_tower

    per_epoch: list[dict[str, float]] = []

    def validation(towers: Any) -> float:
        figures = stage.validation_figures(towers)
        per_epoch.append(figures)
        report(len(per_epoch), figures)
        return epoch_score(figures, objective, constraints)

    towers = fit_two_tower(stage.train, corpus=stage.corpus, schema=stage.schema, config=config,
                           validation=validation, progress=False)
    history = towers.history
    best_epoch = history.best_epoch if history else None
    figures = per_epoch[best_epoch - 1] if best_epoch is not None and 0 < best_epoch <= len(per_epoch) else {}
    return TrialOutcome(best=float(figures.get(objective, float("nan"))), best_epoch=best_epoch,
                        epochs=len(per_epoch), figures=figures)


@dataclass
class StudyResult:
    study: str
    storage: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    space: dict[str, Any] = field(default_factory=dict)
    out: str | None = None

    objective: str = METRIC
    constraints: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "storage": self.storage, "metric": f"validation {self.objective}",
                "constraints": list(self.constraints), "best": self.best, "trials": self.trials, "space": self.space,
                "out": self.out}


def _feasible(trial: Any) -> bool:
    """Whether a finished trial of a constrained study met every bound it recorded (``Trial.set_constraint``; none
    recorded: infeasible)."""
    from tower_platform.pipeline.pruning import feasible

    return bool(trial.constraints) and feasible(trial)


def study_fingerprint(space: SearchSpace, base: TowerConfig, *, objective: str = METRIC,
                      constraints: tuple[Constraint, ...] = (), seeds: int = 1) -> str:
    """What a study is tied to: the base config and space, and (when not the default) its objective, bounds and seeds
    per trial."""
    fingerprint = space.fingerprint(base)
    if objective != METRIC or constraints:
        fingerprint += f"|objective={objective}|constraints={','.join(sorted(map(str, constraints)))}"
    if seeds != 1:
        fingerprint += f"|seeds={seeds}"
    return fingerprint


def open_study(name: str, *, storage: str, fingerprint: str, seed: int) -> Any:
    """Create or resume the named study; refuse one made for another base config, space, objective, bounds or
    seeds per trial (``study_fingerprint``)."""
    import optuna

    from tower_platform.pipeline.pruning import FeasibleMedianPruner

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
        # steps are 1-based epochs, and Optuna prunes from step == n_warmup_steps on: the first epoch is never pruned;
        # the median is over the completed trials that met every bound (pruning.py)
        pruner=FeasibleMedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS + 1),
        load_if_exists=True,
    )
    recorded = study.user_attrs.get(FINGERPRINT_ATTR)
    if recorded is None and not study.trials:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    elif recorded != fingerprint:
        raise ConfigError(
            f"Study {name!r} in {storage} was made with another base config, search space, objective, constraints or "
            "seeds; resume it with the same --config, --set, --space, --objective, --constraint and --seeds, or pick "
            "another --study name."
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
    objective: str = METRIC,
    constraints: tuple[Constraint, ...] = (),
    seeds: int = 1,
) -> StudyResult:
    """Run ``trials`` more trials of the study (or until ``timeout_s``, checked between trials), maximising the
    validation figure ``objective`` subject to ``constraints``. With ``seeds`` > 1 every trial trains that many
    times (``training.seed`` + 0, 1, ...) and its value and figures are the means over the seeds; the pruner sees the
    first seed's epochs."""
    import optuna

    check_figure(objective, what="objective")
    if seeds < 1:
        raise ConfigError(f"seeds {seeds}: a trial needs at least one seed.")
    space.check_against(base, where="The search space")
    study = open_study(study_name, storage=storage, seed=base.training.seed,
                       fingerprint=study_fingerprint(space, base, objective=objective, constraints=constraints,
                                                     seeds=seeds))
    if not study.trials:  # a new study measures the base config first (its values of the searched keys)
        point = space.base_point(base)
        if point:
            study.enqueue_trial(point, user_attrs={ORIGIN_ATTR: "base config"})

    named = sorted({objective, *(c.metric for c in constraints)}, key=FIGURES.index)
    if stage.schema.item_category is None and CATEGORY_FIGURES.intersection(named):
        raise ConfigError(
            f"{', '.join(sorted(CATEGORY_FIGURES.intersection(named)))} needs the items' category, and the dataset "
            "config names none; declare items.category (feature_repo.item_category for a Feast repository) or tune "
            "another figure."
        )

    def run_trial(trial: optuna.Trial) -> float:
        settings = space.suggest(trial)
        config = base.with_overrides(settings)
        started = time.perf_counter()
        best_so_far = float("-inf")
        violations = [float("inf")] * len(constraints)  # of the figures recorded last (none yet: infeasible)

        def record(figures: dict[str, float]) -> None:
            trial.set_user_attr("figures", {name: figures[name] for name in named})
            violations[:] = [c.violation(figures) for c in constraints]

        def report(epoch: int, figures: dict[str, float]) -> None:
            nonlocal best_so_far
            value, score = figures[objective], epoch_score(figures, objective, constraints)
            trial.report(value, epoch)
            trial.set_user_attr("epochs", epoch)
            if score > best_so_far:  # a pruned trial keeps the figures of its best epoch so far
                best_so_far = score
                record(figures)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation {objective} {value:.4f} after epoch {epoch}")

        def silent(epoch: int, figures: dict[str, float]) -> None:  # the later seeds report nothing to the pruner
            pass

        outcomes: list[TrialOutcome] = []
        try:
            for k in range(seeds):
                seeded = config if k == 0 else config.with_overrides({"training.seed": base.training.seed + k})
                outcomes.append(train_trial(stage, seeded, report=report if k == 0 else silent, objective=objective,
                                            constraints=constraints))
            trial.set_user_attr("best_epoch", outcomes[0].best_epoch)
            if seeds > 1:
                trial.set_user_attr("seed_values", [o.best for o in outcomes])
            measured = [o.figures for o in outcomes if o.figures]
            if measured:  # the mean of the seeds' best-epoch figures
                record({name: sum(f[name] for f in measured) / len(measured) for name in measured[0]})
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - started)
            for bound, violation in zip(constraints, violations, strict=True):  # once per trial, pruned or complete:
                trial.set_constraint(str(bound), violation)  # what the TPE sampler reads (trial.constraints)
        return sum(o.best for o in outcomes) / len(outcomes)

    def announce(_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        bounds = ""
        if constraints:
            figures = trial.user_attrs.get("figures", {})
            bounds = ", " + ", ".join(f"{c.metric} {figures[c.metric]:.4f}" if c.metric in figures else f"{c.metric} -"
                                      for c in constraints)
            bounds += " (meets the constraints)" if _feasible(trial) else " (misses a constraint)"
        echo(f"trial {trial.number}: {trial.state.name.lower()}, validation {objective} {value}{bounds}, "
             f"{trial.user_attrs.get('epochs', 0)} epochs, {trial.user_attrs.get('seconds', 0.0):.0f} s")

    study.optimize(run_trial, n_trials=trials, timeout=timeout_s, callbacks=[announce], gc_after_trial=True)
    result = summarise(study, storage=storage, space=space, constrained=bool(constraints))
    result.objective, result.constraints = objective, [str(c) for c in constraints]
    return result


def summarise(study: Any, *, storage: str, space: SearchSpace, constrained: bool = False) -> StudyResult:
    """The trials as rows, and the best complete trial (that meets the constraints, when ``constrained``)."""
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
            "figures": dict(trial.user_attrs.get("figures", {})),
            "seed_values": trial.user_attrs.get("seed_values"),  # each seed's value when a trial trains several
            "feasible": _feasible(trial) if constrained else None,
        })
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
                and (not constrained or _feasible(t))]
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
