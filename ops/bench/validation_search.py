"""Validation-only search over two-tower settings, in the platform's own training path and evaluation harness.

Every run: the dataset's shipped ``training:`` section (or ``--base default``: ``TowerConfig()``), plus the named
overrides, plus the seed -> ``train_and_evaluate(refit=False)``: trained on the train period with early stopping on
validation Recall@100, evaluated on validation with the next-item protocol over the full corpus (the same harness as
EASE). Test data is never looked at here; ``quality.py`` reports test figures for the chosen configurations only.

    .venv/bin/python ops/bench/validation_search.py --dataset movielens-latest-small --seeds 0 1 2 \
        --grid '{"epochs 10": {"training.epochs": 10, "training.patience": 3}}'
    .venv/bin/python ops/bench/validation_search.py --grid-file grid.json ...
    .venv/bin/python ops/bench/validation_search.py report       # mean +- std per (dataset, name)

Runs are appended to ``ops/bench/results/validation_search.jsonl`` as they finish; a (dataset, name, seed) already
there is skipped, so an interrupted search resumes.
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
RUNS_FILE = RESULTS / "validation_search.jsonl"
MIN_CATEGORY_QUERIES = 20


def load_runs(path: Path = RUNS_FILE) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def worst_category(report: Any) -> tuple[str | None, float]:
    figures = {n: f["recall@100"] for n, f in report.by_category.items() if f["n_queries"] >= MIN_CATEGORY_QUERIES}
    if not figures:
        return None, math.nan
    name = min(figures, key=lambda n: figures[n])
    return name, figures[name]


def run(dataset_name: str, grid: dict[str, dict[str, Any]], seeds: list[int], *, base: str, runs_file: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ablation import prepare  # noqa: E402  (one TOWER_HOME per dataset under /tmp)

    from tower_platform.datasets import load_dataset_config
    from tower_platform.paths import bundled_config
    from tower_platform.pipeline.config import tower_config_from
    from tower_platform.pipeline.train import train_and_evaluate
    from towers.config import TowerConfig

    import torch

    torch.set_num_threads(int(os.environ.get("SEARCH_THREADS", "1")))
    store, training_set = prepare(dataset_name)
    dataset = load_dataset_config(bundled_config(dataset_name))
    for seed in seeds:
        for name, overrides in grid.items():
            done = {(r["dataset"], r["name"], r["seed"]) for r in load_runs(runs_file)}
            if (dataset_name, name, seed) in done:
                continue
            settings = {**overrides, "training.seed": seed}
            config = (tower_config_from(dataset, overrides=settings) if base == "shipped"
                      else TowerConfig().with_overrides(settings))
            started = time.perf_counter()
            trained = train_and_evaluate(training_set, store, config=config, refit=False, progress=False)
            seconds = time.perf_counter() - started
            report = trained.validation
            history = trained.towers.history
            worst, worst_recall = worst_category(report)
            record = {
                "dataset": dataset_name, "name": name, "base": base, "overrides": overrides, "seed": seed,
                "validation_recall@100": report.metrics["recall@100"],
                "validation_recall@50": report.metrics["recall@50"],
                "validation_ndcg@50": report.metrics["ndcg@50"],
                "validation_recall@100_per_user": report.headline()["recall@100_per_user"],
                "validation_recall@100_tail": report.by_popularity["tail"]["recall@100"],
                "validation_worst_category": worst, "validation_worst_category_recall": worst_recall,
                "best_epoch": trained.best_epoch,
                "epochs_run": len(history.epochs) if history else None,
                "per_epoch_validation": [e.get("validation") for e in history.epochs] if history else [],
                "train_seconds": sum(e["seconds"] for e in history.epochs) if history else None,
                "examples_per_s": (sum(e["examples_per_s"] for e in history.epochs) / len(history.epochs))
                if history and history.epochs else None,
                "seconds": seconds,
                "config": config.to_dict(),
            }
            runs_file.parent.mkdir(parents=True, exist_ok=True)
            with runs_file.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, default=float) + "\n")
            print(f"{dataset_name} | {name} | seed {seed} | val R@100 {record['validation_recall@100']:.4f} | "
                  f"tail {record['validation_recall@100_tail']:.4f} | worst cat {worst_recall:.4f} | "
                  f"epochs {record['epochs_run']} (best {trained.best_epoch}) | "
                  f"{record['examples_per_s'] or 0:,.0f} ex/s | {seconds:.0f} s", flush=True)


def report(runs_file: Path) -> str:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in load_runs(runs_file):
        rows.setdefault((record["dataset"], record["name"]), []).append(record)
    keys = ["validation_recall@100", "validation_recall@100_per_user", "validation_recall@100_tail",
            "validation_worst_category_recall"]
    lines = ["| dataset | name | seeds | val R@100 | val R@100 per user | val R@100 tail | val worst cat. | "
             "best epochs | ex/s | s/run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (dataset, name), records in rows.items():
        cells = []
        for key in keys:
            values = [r[key] for r in records if r[key] is not None and not math.isnan(r[key])]
            mean = sum(values) / len(values) if values else math.nan
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            cells.append(f"{mean:.4f} ± {std:.4f}")
        epochs = ",".join(str(r["best_epoch"]) for r in records)
        rate = sum(r["examples_per_s"] or 0 for r in records) / len(records)
        seconds = sum(r["seconds"] for r in records) / len(records)
        lines.append(f"| {dataset} | {name} | {len(records)} | " + " | ".join(cells)
                     + f" | {epochs} | {rate:,.0f} | {seconds:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "report"])
    parser.add_argument("--dataset", default="movielens-latest-small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--grid", default=None, help="JSON {name: {dotted key: value}}")
    parser.add_argument("--grid-file", type=Path, default=None)
    parser.add_argument("--base", choices=["shipped", "default"], default="shipped")
    parser.add_argument("--runs-file", type=Path, default=RUNS_FILE)
    args = parser.parse_args()
    if args.command == "report":
        print(report(args.runs_file))
        return
    grid = json.loads(args.grid_file.read_text()) if args.grid_file else json.loads(args.grid or "{}")
    run(args.dataset, grid, args.seeds, base=args.base, runs_file=args.runs_file)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
