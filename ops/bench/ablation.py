"""Ablation of the loss, tower and feature components on MovieLens latest-small (bundled) and MovieLens-100K, with the
classical baselines beside them.

Every run goes through the platform's own pipeline: ingest -> Feast apply + materialize -> point-in-time training set
-> ``train_and_evaluate`` (early stopping on validation Recall@100, refit on train + validation for the best number of
epochs, next-item evaluation on test). Each dataset lives in its own TOWER_HOME under /tmp (one per checkout). The same time split and
budget hold for every row.

Rows are named in ``ops/bench/ablation_rows.yaml`` (base config, TowerConfig overrides, features to drop): the plain
and corrected softmax, each component added alone to the corrected softmax, then combinations of the components that
beat it on validation with seed 0 (the best 2, the best 3, all), and the shipped configuration with its variants
(sequence encoder, full softmax, without the recency features, the queue, the estimator's update rule). A row whose
keys the current TowerConfig lacks is reported as not runnable and skipped. The classical baselines (MostPopular, the
recent-window MostPopular, ItemKNN, EASE with lambda chosen on validation) run once per dataset. The best row is the
one with the best mean validation Recall@100 over the seeds (selection on validation only; test figures are reported).

    .venv/bin/python ops/bench/ablation.py rows                      # which rows this TowerConfig can run
    .venv/bin/python ops/bench/ablation.py run --seeds 0 1 2        # appends runs (and baselines) as they finish
    .venv/bin/python ops/bench/ablation.py run --rows shipped "shipped + full softmax" --dataset movielens-100k
    .venv/bin/python ops/bench/ablation.py report                   # table + ablation.{md,json,png}
    .venv/bin/python ops/bench/ablation.py tune                     # validation figures of the settings in TUNING

The full re-run, once the model work (sequence encoder, full softmax, estimator update rule) is merged (about 20
rows x 3 seeds x 2 datasets, a few hours on two idle cores):

    .venv/bin/python ops/bench/ablation.py rows                      # every row should say runnable
    ABLATION_THREADS=2 nice .venv/bin/python ops/bench/ablation.py run --seeds 0 1 2
    .venv/bin/python ops/bench/ablation.py report

``--results DIR`` puts the runs file and the report elsewhere (a smoke run: ``--results /tmp/abl --set
training.max_steps=5``). The report uses, per dataset, the runs of the latest training set (its fingerprint), so runs
of an older feature set never mix in.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "ops" / "bench" / "results"
ROWS_FILE = Path(__file__).with_name("ablation_rows.yaml")
ML100K_SOURCE = REPO / ".." / "shared" / "datasets" / "movielens-100k"
DATASETS = ("movielens-latest-small", "movielens-100k")
MIN_CATEGORY_QUERIES = 20  # categories with fewer test queries are left out of the per-category spread
BUDGET: dict[str, Any] = {"training.epochs": 4, "training.patience": 1}  # the common budget
REFERENCE = "+ correction"
SELECTION_SEED = 0  # combinations are chosen on this seed's validation figures, then run with every seed
SAME_FAMILY = {"+ SSL(RFM)": "ssl", "+ SSL(CFM)": "ssl", "+ DAT(AMM)": "dat", "+ DAT(AMM + CAL)": "dat"}
BASELINE = "baseline: "
# Settings tried before the ablation (seed 0, validation Recall@100 of the model fit on train, no refit).
TUNING: dict[str, list[dict[str, Any]]] = {
    "DAT id dropout": [{"dat.enabled": True, "dat.default_rate": rate} for rate in (0.0, 0.5, 0.9)]
    + [{"dat.enabled": True, "dat.unseen": "learned", "dat.default_rate": 0.5}],
    "CAL weight": [{"dat.enabled": True, "dat.default_rate": 0.5, "dat.category_weight": w} for w in (1.0, 10.0, 100.0)],
    "SSL weight": [{"ssl.weight": w, "ssl.masking": "random"} for w in (0.1, 0.5, 1.0)],
}


def load_rows(path: Path = ROWS_FILE) -> dict[str, dict[str, Any]]:
    import yaml

    rows = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("rows") or {}
    for name, row in rows.items():
        unknown = set(row) - {"base", "group", "overrides", "drop_features"}
        if unknown or row.get("base") not in ("defaults", "shipped"):
            raise SystemExit(f"{path}: row {name!r} needs base: defaults|shipped and only the keys group, overrides, "
                             f"drop_features (got {sorted(row)})")
        row.setdefault("overrides", {})
        row.setdefault("drop_features", [])
        row.setdefault("group", "shipped" if row["base"] == "shipped" else "components")
    return rows


ROWS = load_rows()


# --- data and configs ----------------------------------------------------------------------------------------------


def prepare(dataset: str) -> tuple[Any, Any, Any]:
    """Ingest, apply, materialize and build the training set of ``dataset`` in /tmp/tower-ablation-<checkout>-<dataset>."""
    from tower_platform.datasets import ingest, load_dataset_config
    from tower_platform.features.materialization import apply_and_materialize
    from tower_platform.features.training_set import build_training_set
    from tower_platform.paths import bundled_config, packaged_feature_repo

    home = Path("/tmp") / f"tower-ablation-{REPO.name}-{dataset}"  # one per checkout: parallel runs never share
    home.mkdir(parents=True, exist_ok=True)
    os.environ["TOWER_HOME"] = str(home)
    config = load_dataset_config(bundled_config(dataset))
    source = ML100K_SOURCE.resolve() if dataset == "movielens-100k" else None
    if source is not None and not source.exists():
        raise SystemExit(f"MovieLens-100K is not at {source}; skip it or place the dataset there")
    ingest(config, home_dir=home, source=source)
    store, _, _ = apply_and_materialize(repo_dir=packaged_feature_repo(), home_dir=home)
    return config, store, build_training_set(store, config)


def row_config(row: dict[str, Any], *, dataset_config: Any, common: dict[str, Any], seed: int) -> Any:
    """The row's TowerConfig: its base, the common budget, its overrides, the run's --set values and the seed."""
    from tower_platform.pipeline.config import tower_config_from
    from towers.config import TowerConfig

    base = tower_config_from(dataset_config) if row["base"] == "shipped" else TowerConfig()
    return base.with_overrides({**BUDGET, **row["overrides"], **common, "training.seed": seed})


def without_features(training_set: Any, names: list[str]) -> Any:
    """The training set with ``names`` (full names, or the part after ``__``) left out of its table and schema."""
    import dataclasses

    from towers.features import FeatureSchema

    schema = training_set.schema
    dropped = {f.name for f in schema.features if f.name in names or f.name.split("__", 1)[-1] in names}
    missing = [n for n in names if not any(d == n or d.split("__", 1)[-1] == n for d in dropped)]
    if missing:
        raise ValueError(f"the training set has no feature {missing}")
    if schema.item_category in dropped:
        raise ValueError(f"{schema.item_category} is the item category; it cannot be dropped")
    kept = FeatureSchema(query=tuple(f for f in schema.query if f.name not in dropped),
                         item=tuple(f for f in schema.item if f.name not in dropped), user_id=schema.user_id,
                         item_id=schema.item_id, item_category=schema.item_category, metadata=schema.metadata)
    table = training_set.table.drop_columns([c for c in training_set.table.column_names if c in dropped])
    return dataclasses.replace(training_set, table=table, schema=kept)


def runnable(row: dict[str, Any], *, dataset_config: Any, training_set: Any) -> str | None:
    """None when the row can run on this code and training set, else why not."""
    from towers.errors import TowersConfigError

    try:
        row_config(row, dataset_config=dataset_config, common={}, seed=0)
        if row["drop_features"]:
            without_features(training_set, row["drop_features"])
    except (TowersConfigError, ValueError) as exc:
        return str(exc).split(";")[0]  # the first clause names the key; the rest lists every valid key
    return None


def category_spread(report: Any) -> dict[str, Any]:
    figures = {name: f["recall@100"] for name, f in report.by_category.items() if f["n_queries"] >= MIN_CATEGORY_QUERIES}
    if not figures:
        return {"category_spread": math.nan, "worst_category": None, "worst_category_recall": math.nan}
    worst = min(figures, key=lambda name: figures[name])
    return {"category_spread": max(figures.values()) - figures[worst], "worst_category": worst,
            "worst_category_recall": figures[worst]}


def test_figures(test: Any) -> dict[str, Any]:
    return {"recall@50": test.metrics["recall@50"], "recall@100": test.metrics["recall@100"],
            "ndcg@50": test.metrics["ndcg@50"], "recall@100_tail": test.by_popularity["tail"]["recall@100"],
            **category_spread(test)}


# --- running -------------------------------------------------------------------------------------------------------


class Runs:
    """The runs file: one JSON record per finished run, appended as it finishes."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "ablation_runs.jsonl"
        self.tuning_path = folder / "ablation_tuning.jsonl"

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def all(self) -> list[dict[str, Any]]:
        return self.read(self.path)

    def append(self, record: dict[str, Any], *, tuning: bool = False) -> None:
        path = self.tuning_path if tuning else self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def run_row(context: dict[str, Any], *, name: str, overrides: dict[str, Any], row: dict[str, Any], seed: int) -> None:
    from tower_platform.pipeline.train import train_and_evaluate

    runs, dataset, fingerprint = context["runs"], context["dataset"], context["fingerprint"]
    if any((r["dataset"], r["config"], r.get("seed"), r.get("fingerprint")) == (dataset, name, seed, fingerprint)
           for r in runs.all()):
        return
    training_set = context["training_set"]
    if row["drop_features"]:
        training_set = without_features(training_set, row["drop_features"])
    config = row_config({**row, "overrides": overrides}, dataset_config=context["config"], common=context["common"],
                        seed=seed)
    started = time.perf_counter()
    trained = train_and_evaluate(training_set, context["store"], config=config, refit=True, progress=False)
    record = {"dataset": dataset, "config": name, "kind": "two-tower", "base": row["base"], "overrides": overrides,
              "drop_features": row["drop_features"], "common": context["common"], "seed": seed,
              "fingerprint": fingerprint, "best_epoch": trained.best_epoch, "seconds": time.perf_counter() - started,
              "validation_recall@100": trained.validation.metrics["recall@100"], **test_figures(trained.test)}
    runs.append(record)
    print(f"{dataset} | {name} | seed {seed} | val R@100 {record['validation_recall@100']:.4f} | "
          f"test R@100 {record['recall@100']:.4f} | {record['seconds']:.0f}s", flush=True)


def run_baselines(context: dict[str, Any]) -> None:
    """MostPopular (all time, last 7 and 30 days), ItemKNN, EASE (lambda by validation Recall@100): validation figure
    fit on train, test figure fit on train + validation; once per training set."""
    from tower_platform.pipeline.train import split_times
    from towers.evaluation import EASE, EASE_LAMBDAS, EvaluationData, classical_baselines

    runs, dataset, fingerprint = context["runs"], context["dataset"], context["fingerprint"]
    if any(r["dataset"] == dataset and r.get("kind") == "baseline" and r.get("fingerprint") == fingerprint
           for r in runs.all()):
        return
    training_set, store = context["training_set"], context["store"]
    validation_time, test_time = split_times(training_set)
    validation = EvaluationData.build(training_set.table, corpus=store.item_corpus(validation_time),
                                      schema=training_set.schema)
    test = EvaluationData.build(training_set.table, corpus=store.item_corpus(test_time), schema=training_set.schema)
    by_l2 = {l2: validation.evaluate_baseline(EASE(l2=l2), fit_periods="train", eval_period="validation")
             .metrics["recall@100"] for l2 in EASE_LAMBDAS}
    l2 = max(by_l2, key=lambda value: by_l2[value])
    for name, model in classical_baselines(ease_l2=l2).items():
        started = time.perf_counter()
        figure = validation.evaluate_baseline(model, fit_periods="train", eval_period="validation").metrics["recall@100"]
        report = test.evaluate_baseline(model, fit_periods=("train", "validation"), eval_period="test")  # refit
        label = BASELINE + name + (" (lambda on validation)" if isinstance(model, EASE) else "")
        record = {"dataset": dataset, "config": label, "kind": "baseline", "seed": None, "fingerprint": fingerprint,
                  "overrides": {}, "seconds": time.perf_counter() - started, "validation_recall@100": figure,
                  **test_figures(report)}
        runs.append(record)
        print(f"{dataset} | {label} | val R@100 {figure:.4f} | test R@100 {record['recall@100']:.4f}", flush=True)


def helpful_components(runs: list[dict[str, Any]], *, dataset: str, fingerprint: str) -> list[str]:
    """Components that beat the reference on validation with the selection seed, best first, one per family."""
    def validation(name: str) -> float:
        values = [r["validation_recall@100"] for r in runs if r["dataset"] == dataset and r["config"] == name
                  and r.get("seed") == SELECTION_SEED and r.get("fingerprint") == fingerprint]
        return values[0] if values else math.nan

    reference = validation(REFERENCE)
    components = [n for n, row in ROWS.items() if row["group"] == "components"]
    ranked = sorted((n for n in components if validation(n) > reference), key=validation, reverse=True)
    chosen, families = [], set()
    for name in ranked:
        family = SAME_FAMILY.get(name, name)
        if family not in families:
            families.add(family)
            chosen.append(name)
    return chosen


def candidate_combinations(runs: list[dict[str, Any]], *, dataset: str, fingerprint: str) -> dict[str, dict[str, Any]]:
    """The best 2, the best 3 and all helpful components together."""
    chosen = helpful_components(runs, dataset=dataset, fingerprint=fingerprint)
    candidates: dict[str, dict[str, Any]] = {}
    for size in sorted({k for k in (2, 3, len(chosen)) if 2 <= k <= len(chosen)}):
        merged: dict[str, Any] = {}
        for name in chosen[:size]:
            merged.update(ROWS[name]["overrides"])
        candidates["combination: " + " ".join(chosen[:size])] = merged
    return candidates


def run(datasets: list[str], seeds: list[int], *, rows: list[str] | None, common: dict[str, Any], runs: Runs,
        baselines: bool) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("ABLATION_THREADS", "1")))
    unknown = sorted(set(rows or []) - set(ROWS))
    if unknown:
        raise SystemExit(f"no row {unknown} in {ROWS_FILE}; the rows are {list(ROWS)}")
    for dataset in datasets:
        config, store, training_set = prepare(dataset)
        context = {"dataset": dataset, "config": config, "store": store, "training_set": training_set,
                   "fingerprint": training_set.fingerprint, "common": common, "runs": runs}
        chosen = {name: ROWS[name] for name in (rows or ROWS)}
        skipped = {name: why for name, row in chosen.items()
                   if (why := runnable(row, dataset_config=config, training_set=training_set))}
        for name, why in skipped.items():
            print(f"{dataset} | {name} | not runnable here: {why}", file=sys.stderr, flush=True)
        if rows and skipped:
            raise SystemExit(f"rows {sorted(skipped)} cannot run on this code; see the lines above")
        if baselines:
            run_baselines(context)
        combine = rows is None or REFERENCE in rows
        for seed in sorted(set(seeds) | ({SELECTION_SEED} if combine else set())):
            for name, row in chosen.items():
                if name not in skipped:
                    run_row(context, name=name, overrides=row["overrides"], row=row, seed=seed)
            if combine:
                combos = candidate_combinations(runs.all(), dataset=dataset, fingerprint=training_set.fingerprint)
                for name, overrides in combos.items():
                    run_row(context, name=name, overrides=overrides, row=ROWS[REFERENCE], seed=seed)


def tune(datasets: list[str], *, runs: Runs) -> None:
    """Validation Recall@100 (fit on train, seed 0, no refit) of each setting in TUNING, appended to the tuning file."""
    from tower_platform.pipeline.train import train_and_evaluate
    from towers.config import TowerConfig

    import torch

    torch.set_num_threads(int(os.environ.get("ABLATION_THREADS", "1")))
    for dataset in datasets:
        _, store, training_set = prepare(dataset)
        done = {(r["group"], json.dumps(r["overrides"], sort_keys=True)) for r in runs.read(runs.tuning_path)
                if r["dataset"] == dataset}
        for group, settings in TUNING.items():
            for overrides in settings:
                if (group, json.dumps(overrides, sort_keys=True)) in done:
                    continue
                config = TowerConfig().with_overrides({**BUDGET, **overrides, "training.seed": 0})
                trained = train_and_evaluate(training_set, store, config=config, refit=False, progress=False)
                record = {"dataset": dataset, "group": group, "overrides": overrides,
                          "validation_recall@100": trained.validation.metrics["recall@100"],
                          "best_epoch": trained.best_epoch}
                runs.append(record, tuning=True)
                print(f"tune {dataset} | {group} | {overrides} | val R@100 {record['validation_recall@100']:.4f}",
                      flush=True)


def show_rows() -> None:
    """Which rows the current TowerConfig accepts (keys only; dropped features are checked when a run starts)."""
    from towers.config import TowerConfig
    from towers.errors import TowersConfigError

    for name, row in ROWS.items():
        try:
            TowerConfig().with_overrides({**BUDGET, **row["overrides"]})
            status = "runnable"
        except TowersConfigError as exc:
            status = f"not runnable: {str(exc).split(';')[0]}"
        print(f"{name:<48} {row['group']:<11} {status}")


def main(argv: list[str] | None = None) -> None:
    from ablation_report import report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the runs file and the report")
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run", help="train and evaluate the rows, appending to the runs file")
    runner.add_argument("--dataset", action="append", choices=DATASETS, help="default: both")
    runner.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    runner.add_argument("--rows", nargs="+", help="row names of ablation_rows.yaml (default: every runnable row)")
    runner.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a TowerConfig setting for every row, e.g. training.max_steps=5 (recorded with each run)")
    runner.add_argument("--no-baselines", action="store_true", help="skip the classical baselines")
    tuner = commands.add_parser("tune", help="validation figures of the settings in TUNING (seed 0, no refit)")
    tuner.add_argument("--dataset", action="append", choices=DATASETS, help="default: both")
    commands.add_parser("report", help="aggregate the runs into ablation.md, ablation.json and ablation.png")
    commands.add_parser("rows", help="list the rows and whether this TowerConfig can run them")
    args = parser.parse_args(argv)
    runs = Runs(args.results)
    if args.command == "run":
        import yaml

        common = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}
        run(args.dataset or list(DATASETS), args.seeds, rows=args.rows, common=common, runs=runs,
            baselines=not args.no_baselines)
    elif args.command == "tune":
        tune(args.dataset or list(DATASETS), runs=runs)
    elif args.command == "rows":
        show_rows()
    else:
        report(runs.all(), runs.read(runs.tuning_path), folder=args.results, budget=BUDGET, reference=REFERENCE)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(Path(__file__).parent))
    main()
