"""Ablation of the loss and tower components on MovieLens latest-small (bundled) and MovieLens-100K.

Every run goes through the platform's own pipeline: ingest -> Feast apply + materialize -> point-in-time training set
-> ``jobs.train_and_evaluate`` (early stopping on validation Recall@100, refit on train + validation for the best
number of epochs, next-item evaluation on test). Each dataset lives in its own TOWER_HOME under /tmp. The same time
split and epoch budget hold for every configuration.

Rows: the plain in-batch softmax, then the corrected softmax (the reference), then each component added alone to the
reference, then combinations: the best 2, the best 3 and all of the components that beat the reference's validation
Recall@100 with seed 0. The best configuration is the row with the best mean validation Recall@100 over the seeds
(selection on validation only; test figures are only reported). Component settings (SSL weight, CAL weight, DAT id
dropout) were chosen beforehand on validation with ``tune``.

    .venv/bin/python ops/bench/ablation.py tune         # validation figures of the settings in TUNING
    .venv/bin/python ops/bench/ablation.py run --dataset movielens-latest-small --seeds 0 1 2   # appends runs
    .venv/bin/python ops/bench/ablation.py report       # table + ops/bench/results/ablation.{md,json,png}

Runs are appended to ``ops/bench/results/ablation_runs.jsonl`` as they finish, so a long ablation can be stopped and
reported at any point; ``report`` shows how many seeds each figure averages.
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
RUNS_FILE = RESULTS / "ablation_runs.jsonl"
TUNING_FILE = RESULTS / "ablation_tuning.jsonl"
ML100K_SOURCE = REPO / ".." / "shared" / "datasets" / "movielens-100k"
DATASETS = ("movielens-latest-small", "movielens-100k")
MIN_CATEGORY_QUERIES = 20  # categories with fewer test queries are left out of the per-category spread

# The common budget: at most 4 epochs with early stopping (patience 1) on validation Recall@100.
BUDGET: dict[str, Any] = {"training.epochs": 4, "training.patience": 1}
REFERENCE = "+ correction"
CONFIGS: dict[str, dict[str, Any]] = {
    "plain softmax": {"loss.sampling_bias_correction": False},
    REFERENCE: {},
    "+ mixed negatives": {"loss.uniform_negatives": 256},
    "+ SSL(RFM)": {"ssl.weight": 1.0, "ssl.masking": "random"},
    "+ SSL(CFM)": {"ssl.weight": 1.0, "ssl.masking": "correlated"},
    "+ DAT(AMM)": {"dat.enabled": True, "dat.default_rate": 0.5},
    "+ DAT(AMM + CAL)": {"dat.enabled": True, "dat.default_rate": 0.5, "dat.category_weight": 100.0},
    "+ queue": {"loss.queue_size": 4096},
    "+ SENet": {"towers.senet": True},
}
# Settings tried before the ablation (seed 0, validation Recall@100 of the model fit on train, no refit); the
# setting with the best mean over both datasets is the one in CONFIGS.
TUNING: dict[str, list[dict[str, Any]]] = {
    "DAT id dropout": [{"dat.enabled": True, "dat.default_rate": rate} for rate in (0.0, 0.5, 0.9)]
    + [{"dat.enabled": True, "dat.unseen": "learned", "dat.default_rate": 0.5}],
    "CAL weight": [{"dat.enabled": True, "dat.default_rate": 0.5, "dat.category_weight": w} for w in (1.0, 10.0, 100.0)],
    "SSL weight": [{"ssl.weight": w, "ssl.masking": "random"} for w in (0.1, 0.5, 1.0)],
}
COMPONENTS = [name for name in CONFIGS if name not in ("plain softmax", REFERENCE)]


# --- running -----------------------------------------------------------------------------------------------------


def prepare(dataset: str) -> tuple[Any, Any]:
    """Ingest, apply, materialize and build the training set of ``dataset`` in /tmp/tower-ablation-<dataset>."""
    from tower_platform.datasets import ingest, load_dataset_config
    from tower_platform.features.materialization import apply_and_materialize
    from tower_platform.paths import bundled_config, packaged_feature_repo
    from tower_platform.features.training_set import build_training_set

    home = Path("/tmp") / f"tower-ablation-{dataset}"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["TOWER_HOME"] = str(home)
    config = load_dataset_config(bundled_config(dataset))
    source = ML100K_SOURCE.resolve() if dataset == "movielens-100k" else None
    if source is not None and not source.exists():
        raise SystemExit(f"MovieLens-100K is not at {source}; skip it or place the dataset there")
    ingest(config, home_dir=home, source=source)
    store, _, _ = apply_and_materialize(repo_dir=packaged_feature_repo(), home_dir=home)
    return store, build_training_set(store, config)


def category_spread(report: Any) -> dict[str, Any]:
    figures = {
        name: f["recall@100"] for name, f in report.by_category.items() if f["n_queries"] >= MIN_CATEGORY_QUERIES
    }
    if not figures:
        return {"category_spread": math.nan, "worst_category": None, "worst_category_recall": math.nan}
    worst = min(figures, key=lambda name: figures[name])
    return {
        "category_spread": max(figures.values()) - figures[worst],
        "worst_category": worst,
        "worst_category_recall": figures[worst],
    }


def run_one(
    training_set: Any, store: Any, *, dataset: str, name: str, overrides: dict[str, Any], seed: int
) -> dict[str, Any]:
    from tower_platform.pipeline.train import train_and_evaluate
    from towers.config import TowerConfig

    config = TowerConfig().with_overrides({**BUDGET, **overrides, "training.seed": seed})
    started = time.perf_counter()
    trained = train_and_evaluate(training_set, store, config=config, refit=True, progress=False)
    test, validation = trained.test, trained.validation
    record = {
        "dataset": dataset,
        "config": name,
        "overrides": overrides,
        "seed": seed,
        "best_epoch": trained.best_epoch,
        "seconds": time.perf_counter() - started,
        "validation_recall@100": validation.metrics["recall@100"],
        "recall@50": test.metrics["recall@50"],
        "recall@100": test.metrics["recall@100"],
        "ndcg@50": test.metrics["ndcg@50"],
        "recall@100_tail": test.by_popularity["tail"]["recall@100"],
        **category_spread(test),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with RUNS_FILE.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    print(f"{dataset} | {name} | seed {seed} | val R@100 {record['validation_recall@100']:.4f} | "
          f"test R@100 {record['recall@100']:.4f} | {record['seconds']:.0f}s", flush=True)
    return record


def load_runs(path: Path = RUNS_FILE) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tune(datasets: list[str]) -> None:
    """Validation Recall@100 (fit on train, seed 0, no refit) of each setting in TUNING, appended to TUNING_FILE."""
    from tower_platform.pipeline.train import train_and_evaluate
    from towers.config import TowerConfig

    import torch

    torch.set_num_threads(int(os.environ.get("ABLATION_THREADS", "1")))
    for dataset in datasets:
        store, training_set = prepare(dataset)
        done = {(r["group"], json.dumps(r["overrides"], sort_keys=True)) for r in load_runs(TUNING_FILE)
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
                with TUNING_FILE.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
                print(f"tune {dataset} | {group} | {overrides} | val R@100 {record['validation_recall@100']:.4f}",
                      flush=True)


SELECTION_SEED = 0  # combinations are chosen on this seed's validation figures, then run with every seed
SAME_FAMILY = {"+ SSL(RFM)": "ssl", "+ SSL(CFM)": "ssl", "+ DAT(AMM)": "dat", "+ DAT(AMM + CAL)": "dat"}


def selection_validation(runs: list[dict[str, Any]], *, dataset: str, name: str) -> float:
    values = [r["validation_recall@100"] for r in runs
              if r["dataset"] == dataset and r["config"] == name and r["seed"] == SELECTION_SEED]
    return values[0] if values else math.nan


def helpful_components(runs: list[dict[str, Any]], *, dataset: str) -> list[str]:
    """Components that beat the reference on validation, best first, one variant per family (SSL masking, DAT)."""
    def validation(name: str) -> float:
        return selection_validation(runs, dataset=dataset, name=name)

    reference = validation(REFERENCE)
    ranked = sorted((n for n in COMPONENTS if validation(n) > reference), key=validation, reverse=True)
    chosen: list[str] = []
    families: set[str] = set()
    for name in ranked:
        family = SAME_FAMILY.get(name, name)
        if family not in families:
            families.add(family)
            chosen.append(name)
    return chosen


def candidate_combinations(runs: list[dict[str, Any]], *, dataset: str) -> dict[str, dict[str, Any]]:
    """The best 2, the best 3 and all helpful components together (each a candidate for the best combination)."""
    chosen = helpful_components(runs, dataset=dataset)
    candidates: dict[str, dict[str, Any]] = {}
    for size in sorted({k for k in (2, 3, len(chosen)) if 2 <= k <= len(chosen)}):
        merged: dict[str, Any] = {}
        for name in chosen[:size]:
            merged.update(CONFIGS[name])
        candidates["combination: " + " ".join(chosen[:size])] = merged
    return candidates


def best_configuration(runs: list[dict[str, Any]], *, dataset: str) -> str | None:
    """The row with the best mean validation Recall@100 among those run with every seed (selection on validation)."""
    rows: dict[str, list[float]] = {}
    for record in runs:
        if record["dataset"] == dataset:
            rows.setdefault(record["config"], []).append(record["validation_recall@100"])
    if not rows:
        return None
    most = max(len(values) for values in rows.values())
    complete = {name: sum(values) / len(values) for name, values in rows.items() if len(values) == most}
    return max(complete, key=lambda name: complete[name])


def run(datasets: list[str], seeds: list[int]) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("ABLATION_THREADS", "1")))
    for dataset in datasets:
        store, training_set = prepare(dataset)
        for seed in sorted(set(seeds) | {SELECTION_SEED}):  # the selection seed first: it picks the combinations
            for name, overrides in CONFIGS.items():
                run_missing(training_set, store, dataset=dataset, name=name, overrides=overrides, seed=seed)
            for name, overrides in candidate_combinations(load_runs(), dataset=dataset).items():
                run_missing(training_set, store, dataset=dataset, name=name, overrides=overrides, seed=seed)


def run_missing(training_set: Any, store: Any, *, dataset: str, name: str, overrides: dict[str, Any], seed: int) -> None:
    done = {(r["dataset"], r["config"], r["seed"]) for r in load_runs()}
    if (dataset, name, seed) not in done:
        run_one(training_set, store, dataset=dataset, name=name, overrides=overrides, seed=seed)


# --- reporting ---------------------------------------------------------------------------------------------------

COLUMNS = [
    ("validation_recall@100", "val R@100"),
    ("recall@50", "R@50"),
    ("recall@100", "R@100"),
    ("ndcg@50", "NDCG@50"),
    ("recall@100_tail", "R@100 tail"),
    ("category_spread", "cat. spread R@100"),
    ("worst_category_recall", "worst cat. R@100"),
]


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for dataset in DATASETS:
        rows = {}
        combinations = sorted({r["config"] for r in runs if r["dataset"] == dataset
                               and r["config"].startswith("combination: ")})
        for name in [*CONFIGS, *combinations]:
            chosen = [r for r in runs if r["dataset"] == dataset and r["config"] == name]
            if not chosen:
                continue
            worst = sorted({r["worst_category"] for r in chosen if r["worst_category"]})
            rows[name] = {
                "seeds": sorted(r["seed"] for r in chosen),
                "overrides": chosen[0]["overrides"],
                "worst_categories": worst,
                **{key: dict(zip(("mean", "std"), mean_std([r[key] for r in chosen]), strict=True))
                   for key, _ in COLUMNS},
            }
        if rows:
            summary[dataset] = {"rows": rows, "best": best_configuration(runs, dataset=dataset)}
    return summary


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# Ablation: loss and tower components",
        "",
        "Generated by `ops/bench/ablation.py`. Test figures of the model refit on train + validation (next-item "
        "protocol, full-corpus ranking); `val R@100` is the validation figure of the model fit on train, the only "
        "one used for selection. Mean +- std over the seeds listed. Budget: at most "
        f"{BUDGET['epochs']} epochs, early stopping with patience {BUDGET['patience']} on validation Recall@100. "
        f"Category spread = max - min of per-category test Recall@100 over categories with >= "
        f"{MIN_CATEGORY_QUERIES} test queries.",
        "",
    ]
    header = "| config | seeds | " + " | ".join(label for _, label in COLUMNS) + " | worst category |"
    rule = "|---|---|" + "---|" * (len(COLUMNS) + 1)
    for dataset, section in summary.items():
        rows, best = section["rows"], section["best"]
        lines += [f"## {dataset}", "", header, rule]
        for name, row in rows.items():
            cells = [f"{row[key]['mean']:.4f} +- {row[key]['std']:.4f}" for key, _ in COLUMNS]
            worst = ", ".join(row["worst_categories"])
            label = f"**{name}** (best on validation)" if name == best else name
            lines.append(f"| {label} | {len(row['seeds'])} | " + " | ".join(cells) + f" | {worst} |")
        if best is not None:
            lines += [
                "",
                f"Best mean validation Recall@100: {best}, TowerConfig overrides "
                f"`{json.dumps(rows[best]['overrides'], sort_keys=True)}`. The combinations are the best 2, the best "
                f"3 and all components that beat `{REFERENCE}` on validation with seed {SELECTION_SEED} (one SSL "
                "masking and one DAT variant each).",
            ]
        lines.append("")
    return "\n".join(lines)


def tuning_markdown(tuning: list[dict[str, Any]]) -> str:
    """Validation Recall@100 of each tried setting, one column per dataset, and the mean the choice was made on."""
    if not tuning:
        return ""
    lines = [
        "## Tuning (validation only)",
        "",
        "Seed 0, model fit on train, validation Recall@100, no refit; the setting with the best mean over both "
        "datasets went into the ablation.",
        "",
        "| group | setting | " + " | ".join(DATASETS) + " | mean |",
        "|---|---|" + "---|" * (len(DATASETS) + 1),
    ]
    settings: dict[tuple[str, str], dict[str, float]] = {}
    for record in tuning:
        key = (record["group"], json.dumps(record["overrides"], sort_keys=True))
        settings.setdefault(key, {})[record["dataset"]] = record["validation_recall@100"]
    for (group, setting), values in settings.items():
        cells = [f"{values[d]:.4f}" if d in values else "-" for d in DATASETS]
        mean = sum(values.values()) / len(values)
        lines.append(f"| {group} | `{setting}` | " + " | ".join(cells) + f" | {mean:.4f} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("recall@100", "test R@100"), ("recall@100_tail", "test R@100, tail"),
               ("worst_category_recall", "test R@100, worst category")]
    figure, axes = plt.subplots(len(summary), len(metrics), figsize=(16, 4.5 * len(summary)), squeeze=False)
    for row, (dataset, section) in enumerate(summary.items()):
        rows, best = section["rows"], section["best"]
        names = list(rows)
        for col, (key, title) in enumerate(metrics):
            ax = axes[row][col]
            means = [rows[n][key]["mean"] for n in names]
            stds = [rows[n][key]["std"] for n in names]
            colours = ["tab:gray" if n in ("plain softmax", REFERENCE) else "tab:orange" if n == best
                       else "tab:purple" if n.startswith("combination: ") else "tab:blue" for n in names]
            ax.barh(range(len(names)), means, xerr=stds, color=colours, capsize=3)
            ax.set_yticks(range(len(names)), names if col == 0 else [""] * len(names))
            ax.invert_yaxis()
            ax.set_title(f"{dataset}\n{title}", fontsize=9)
            reference = rows.get(REFERENCE, {}).get(key, {}).get("mean")
            if reference is not None:
                ax.axvline(reference, color="black", linewidth=0.8, linestyle="--")
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def report() -> None:
    runs = load_runs()
    if not runs:
        raise SystemExit(f"no runs in {RUNS_FILE}; run `ablation.py run` first")
    summary = summarise(runs)
    tuning = load_runs(TUNING_FILE)
    text = markdown(summary) + "\n" + tuning_markdown(tuning)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    _write(RESULTS / "ablation.md", text)
    _write(RESULTS / "ablation.json", json.dumps({"budget": BUDGET, "summary": summary, "tuning": tuning, "runs": runs},
                                                        indent=2))
    plot(summary, RESULTS / "ablation.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run", help="train and evaluate every configuration, appending to the runs file")
    runner.add_argument("--dataset", action="append", choices=DATASETS, help="default: both")
    runner.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    tuner = commands.add_parser("tune", help="validation figures of the settings in TUNING (seed 0, no refit)")
    tuner.add_argument("--dataset", action="append", choices=DATASETS, help="default: both")
    commands.add_parser("report", help="aggregate the runs into ablation.md, ablation.json and ablation.png")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.dataset or list(DATASETS), args.seeds)
    elif args.command == "tune":
        tune(args.dataset or list(DATASETS))
    else:
        report()


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
