"""Retrieval quality on a dataset with the time split and the next-item protocol (full corpus, no sampled metrics).

Rows: the classical baselines (MostPopular, also over the last 7 and 30 days, ItemKNN, EASE with lambda tuned on
validation), and the two-tower model as plain in-batch softmax,
with the sampling-bias correction, and corrected + mixed negatives (mean +- std over seeds). Every model is selected
on validation (fit on train) and reported on test (fit on train + validation), exactly as docs/evaluation.md says.

    python ops/bench/quality.py                         # bundled MovieLens latest-small, 3 seeds
    python ops/bench/quality.py --config platform/tower_platform/bundled/configs/movielens-100k.yaml \
        --source ../shared/datasets/movielens-100k

Writes ops/bench/results/quality_<dataset>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "ops" / "bench" / "results"
COLUMNS = ["recall@50", "recall@100", "ndcg@50", "recall@100_tail", "recall@100_per_user"]

TWO_TOWER_ROWS = {
    "two-tower, plain softmax": {"loss.sampling_bias_correction": False},
    "two-tower, corrected softmax": {"loss.sampling_bias_correction": True},
    "two-tower, corrected + mixed negatives": {"loss.sampling_bias_correction": True, "loss.uniform_negatives": 1024},
}


def prepare(config: Path, source: Path | None, home: Path):
    from tower_platform.datasets.config import load_dataset_config
    from tower_platform.datasets.ingest import ingest
    from tower_platform.features.materialization import apply_and_materialize
    from tower_platform.paths import packaged_feature_repo
    from tower_platform.features.training_set import build_training_set

    os.environ["TOWER_HOME"] = str(home)
    dataset = load_dataset_config(config)
    ingest(dataset, home_dir=home, source=source)
    store, _, _ = apply_and_materialize(repo_dir=packaged_feature_repo(), home_dir=home)
    return dataset, store, build_training_set(store, dataset)


def baseline_rows(training_set, store) -> dict[str, dict[str, float]]:
    from tower_platform.pipeline.train import split_times
    from towers.evaluation import EASE, EvaluationData, classical_baselines

    validation_time, test_time = split_times(training_set)
    validation = EvaluationData.build(training_set.table, corpus=store.item_corpus(validation_time),
                                      schema=training_set.schema)
    test = EvaluationData.build(training_set.table, corpus=store.item_corpus(test_time), schema=training_set.schema)
    best_l2, best = None, -1.0
    for l2 in (50.0, 200.0, 500.0, 1000.0):  # tuned on validation only
        figure = validation.evaluate_baseline(EASE(l2=l2), fit_periods="train", eval_period="validation")
        print(f"  EASE l2={l2:g}: validation recall@100 {figure.metrics['recall@100']:.4f}", file=sys.stderr)
        if figure.metrics["recall@100"] > best:
            best_l2, best = l2, figure.metrics["recall@100"]
    rows = {}
    for name, model in classical_baselines(ease_l2=best_l2).items():
        report = test.evaluate_baseline(model, fit_periods=("train", "validation"), eval_period="test")
        label = f"EASE (l2 {best_l2:g}, tuned on validation)" if isinstance(model, EASE) else name
        rows[label] = {"test": report.headline(), "seeds": 1}
    return rows


def two_tower_rows(dataset, training_set, store, *, seeds: int, overrides: dict) -> dict[str, dict]:
    from tower_platform.pipeline.config import tower_config_from
    from tower_platform.pipeline.train import train_and_evaluate

    rows = {}
    for name, settings in TWO_TOWER_ROWS.items():
        runs = []
        for seed in range(seeds):
            config = tower_config_from(dataset, overrides={**settings, **overrides, "training.seed": seed})
            started = time.perf_counter()
            trained = train_and_evaluate(training_set, store, config=config, progress=False)
            runs.append({"validation": trained.validation.headline(), "test": trained.test.headline(),
                         "best_epoch": trained.best_epoch, "seconds": time.perf_counter() - started})
            print(f"  {name} seed {seed}: validation R@100 {runs[-1]['validation']['recall@100']:.4f}, "
                  f"test R@100 {runs[-1]['test']['recall@100']:.4f}, best epoch {trained.best_epoch}, "
                  f"{runs[-1]['seconds']:.0f} s", file=sys.stderr)
        rows[name] = {"runs": runs, "seeds": seeds}
    return rows


def summarise(rows: dict[str, dict]) -> dict[str, dict[str, tuple[float, float]]]:
    table = {}
    for name, row in rows.items():
        tests = [run["test"] for run in row["runs"]] if "runs" in row else [row["test"]]
        table[name] = {
            col: (statistics.fmean(t[col] for t in tests), statistics.pstdev(t[col] for t in tests) if len(tests) > 1 else 0.0)
            for col in COLUMNS
        }
    return table


def markdown(dataset: str, table, rows, *, n_queries: int, n_users: int) -> str:
    lines = [
        f"# Retrieval quality: {dataset}",
        "",
        f"Next-item protocol, test stage (fit on train + validation), full corpus; {n_queries:,} queries from "
        f"{n_users} users. Two-tower rows: mean ± std over {max(r['seeds'] for r in rows.values())} seeds; "
        "early stopping on validation Recall@100, then refit on train + validation for the best epoch count.",
        "",
        "| model | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for name, figures in table.items():
        cells = [f"{m:.3f} ± {s:.3f}" if rows[name]["seeds"] > 1 else f"{m:.3f}" for m, s in figures.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from tower_platform.paths import bundled_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=bundled_config())
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="TowerConfig override KEY=VALUE for two-tower rows")
    args = parser.parse_args()
    import yaml

    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    with tempfile.TemporaryDirectory(prefix="tower-quality-") as tmp:
        dataset, store, training_set = prepare(args.config, args.source, Path(tmp))
        print(f"{dataset.name}: {training_set.table.num_rows:,} interactions", file=sys.stderr)
        rows = baseline_rows(training_set, store)
        rows.update(two_tower_rows(dataset, training_set, store, seeds=args.seeds, overrides=overrides))
    table = summarise(rows)
    first = next(iter(rows.values()))
    headline = first["test"] if "test" in first else first["runs"][0]["test"]
    text = markdown(dataset.name, table, rows, n_queries=int(headline["n_queries"]), n_users=int(headline["n_users"]))
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"quality_{dataset.name}.md").write_text(text)
    (RESULTS / f"quality_{dataset.name}.json").write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    main()
