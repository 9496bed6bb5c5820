"""Retrieval quality on a dataset with the time split and the next-item protocol (full corpus, no sampled metrics).

Rows: the classical baselines (MostPopular, also over the last 7 and 30 days, ItemKNN, EASE with lambda tuned on
validation), and the two-tower model as the plain in-batch softmax and the corrected softmax (``TowerConfig()``
defaults) and as the dataset config ships it (its ``training:`` section), mean +- std over seeds. Every model is
selected on validation (fit on train) and reported on test (fit on train + validation), exactly as
docs/evaluation.md says. The worst category is the lowest per-category Recall@100 over the categories with at least
20 test queries. The last lines compare the shipped row with the bar of issue 11: R@100 at least EASE's, tail R@100
at least 5x and worst-category R@100 at least 2x the best classical model's.

    python ops/bench/quality.py                         # bundled MovieLens latest-small, 3 seeds
    python ops/bench/quality.py --config platform/tower_platform/bundled/configs/movielens-100k.yaml \
        --source ../shared/datasets/movielens-100k

    python ops/bench/quality.py --rows "two-tower, shipped config"          # only some two-tower rows
    python ops/bench/quality.py --extra-row 'name={"loss.temperature": 0.1}'  # a row on the shipped config
    python ops/bench/quality.py --no-run --merge ops/bench/results/quality_movielens-latest-small.json \
        --merge ops/bench/results/quality_other.json --rename "two-tower, a=two-tower, b"  # compose earlier runs

Writes ops/bench/results/quality_<dataset>.md and .json (``--out NAME``: quality_NAME.md and .json).
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
COLUMNS = ["recall@50", "recall@100", "ndcg@50", "recall@100_tail", "recall@100_per_user", "worst_category_recall@100"]
SHIPPED = "two-tower, shipped config"

# name -> (base, overrides): base "default" is TowerConfig(), "shipped" the dataset config's training section
TWO_TOWER_ROWS: dict[str, tuple[str, dict]] = {
    "two-tower, plain softmax": ("default", {"loss.sampling_bias_correction": False}),
    "two-tower, corrected softmax": ("default", {"loss.sampling_bias_correction": True}),
    SHIPPED: ("shipped", {}),
}


def with_worst_category(report) -> dict[str, float]:
    """The report's headline, its worst per-category Recall@100 (categories with >= 20 queries) NaN when none."""
    figures = report.headline()
    figures.setdefault("worst_category_recall@100", float("nan"))
    return figures


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
        rows[label] = {"test": with_worst_category(report), "seeds": 1}
        if isinstance(model, EASE):
            rows[label]["validation_recall@100"] = best  # the two-tower rows' validation figures compare with this
    return rows


def two_tower_rows(dataset, training_set, store, *, seeds: int, rows_wanted: dict[str, tuple[str, dict]],
                   overrides: dict) -> dict[str, dict]:
    from tower_platform.pipeline.config import tower_config_from
    from tower_platform.pipeline.train import train_and_evaluate
    from towers.config import TowerConfig

    rows = {}
    for name, (base, settings) in rows_wanted.items():
        runs = []
        for seed in range(seeds):
            values = {**settings, **overrides, "training.seed": seed}
            config = (tower_config_from(dataset, overrides=values) if base == "shipped"
                      else TowerConfig().with_overrides(values))
            started = time.perf_counter()
            trained = train_and_evaluate(training_set, store, config=config, progress=False)
            runs.append({"validation": with_worst_category(trained.validation), "test": with_worst_category(trained.test),
                         "best_epoch": trained.best_epoch, "seconds": time.perf_counter() - started,
                         "config": config.to_dict()})
            print(f"  {name} seed {seed}: validation R@100 {runs[-1]['validation']['recall@100']:.4f}, "
                  f"test R@100 {runs[-1]['test']['recall@100']:.4f}, best epoch {trained.best_epoch}, "
                  f"{runs[-1]['seconds']:.0f} s", file=sys.stderr)
        rows[name] = {"runs": runs, "seeds": seeds}
    return rows


def merged_rows(rows: dict[str, dict], merged: dict[str, dict], *, renames: dict[str, str]) -> dict[str, dict]:
    """The classical rows first, then the two-tower rows; a row of this run replaces a merged one of the same name;
    ``renames`` {old: new} renames rows (a merged row that no longer is what its name says)."""
    combined = {**merged, **rows}
    missing = sorted(set(renames) - set(combined))
    if missing:
        raise SystemExit(f"--rename: no row named {', '.join(map(repr, missing))}; rows: {', '.join(combined)}")
    combined = {renames.get(name, name): row for name, row in combined.items()}
    classical = {n: r for n, r in combined.items() if not n.startswith("two-tower")}
    return {**classical, **{n: r for n, r in combined.items() if n.startswith("two-tower")}}


def bar_lines(table: dict[str, dict[str, tuple[float, float]]]) -> list[str]:
    """The shipped row against the classical rows (issue 11's bar)."""
    classical = {n: f for n, f in table.items() if not n.startswith("two-tower")}
    if SHIPPED not in table or not classical:
        return []
    shipped = {k: v[0] for k, v in table[SHIPPED].items()}
    ease = next((f for n, f in classical.items() if n.startswith("EASE")), None)
    best_tail = max(f["recall@100_tail"][0] for f in classical.values())
    best_worst = max(f["worst_category_recall@100"][0] for f in classical.values())
    lines = ["", "Bar (shipped config, test):"]
    if ease is not None:
        lines.append(f"- R@100 {shipped['recall@100']:.3f} vs EASE {ease['recall@100'][0]:.3f}: "
                     f"{shipped['recall@100'] / ease['recall@100'][0]:.2f}x (target >= 1x)")
    lines.append(f"- tail R@100 {shipped['recall@100_tail']:.3f} vs best classical {best_tail:.3f}: "
                 + (f"{shipped['recall@100_tail'] / best_tail:.1f}x" if best_tail > 0 else "classical 0")
                 + " (target >= 5x)")
    lines.append(f"- worst-category R@100 {shipped['worst_category_recall@100']:.3f} vs best classical "
                 f"{best_worst:.3f}: " + (f"{shipped['worst_category_recall@100'] / best_worst:.1f}x"
                                         if best_worst > 0 else "classical 0") + " (target >= 2x)")
    return lines


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
    validation = [(name, row) for name, row in rows.items() if "runs" in row]
    ease = [(name, row) for name, row in rows.items() if "validation_recall@100" in row]
    for name, row in ease:
        lines += ["", f"{name}: validation Recall@100 {row['validation_recall@100']:.4f} (fit on train)."]
    if validation:
        lines += ["", "Validation Recall@100 of the two-tower rows (fit on train; the figure early stopping and every "
                  "choice of settings used), per seed, and the best epoch:", ""]
        for name, row in validation:
            seeds = ", ".join(f"{r['validation']['recall@100']:.4f} (epoch {r['best_epoch']})" for r in row["runs"])
            lines.append(f"- {name}: {seeds}")
    if SHIPPED in rows and "runs" in rows[SHIPPED]:
        config = rows[SHIPPED]["runs"][0]["config"]
        lines += ["", f"Shipped config: `{json.dumps(config, sort_keys=True)}`"]
    lines += bar_lines(table)
    return "\n".join(lines) + "\n"


def main() -> None:
    from tower_platform.paths import bundled_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=bundled_config())
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="TowerConfig override KEY=VALUE for two-tower rows")
    parser.add_argument("--rows", action="append", default=None, help="only these two-tower rows (repeatable)")
    parser.add_argument("--extra-row", action="append", default=[],
                        help='NAME={"dotted.key": value, ...}: a further row on the shipped config')
    parser.add_argument("--out", default=None,
                        help="write quality_<OUT>.md and .json (default: the dataset's name; a partial run of some "
                             "rows should name its own files rather than replace the full table)")
    parser.add_argument("--merge", action="append", default=[], type=Path,
                        help="a quality_*.json written earlier: its rows join the table (a row of this run with the "
                             "same name wins; with --rows '' and no --extra-row only the baselines run)")
    parser.add_argument("--no-run", action="store_true",
                        help="run nothing: the table of the --merge files only (for composing earlier runs)")
    parser.add_argument("--rename", action="append", default=[], help="OLD=NEW: a row's name in the table")
    args = parser.parse_args()
    import yaml

    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    wanted = {n: r for n, r in TWO_TOWER_ROWS.items() if args.rows is None or n in args.rows}
    for extra in args.extra_row:
        name, _, settings = extra.partition("=")
        name = name if name.startswith("two-tower") else f"two-tower, {name}"
        wanted[name] = ("shipped", json.loads(settings))
    if args.out is not None and (not args.out or "/" in args.out or args.out.startswith(".")):
        parser.error(f"--out {args.out!r}: a name for ops/bench/results/quality_<OUT>.md, not a path")
    merged: dict[str, dict] = {}
    for path in args.merge:
        merged.update(json.loads(path.read_text()))
    if args.no_run:
        if not merged:
            parser.error("--no-run needs at least one --merge file")
        from tower_platform.datasets import load_dataset_config

        dataset, rows = load_dataset_config(args.config), {}
    else:
        with tempfile.TemporaryDirectory(prefix="tower-quality-") as tmp:
            dataset, store, training_set = prepare(args.config, args.source, Path(tmp))
            print(f"{dataset.name}: {training_set.table.num_rows:,} interactions", file=sys.stderr)
            rows = baseline_rows(training_set, store)
            rows.update(two_tower_rows(dataset, training_set, store, seeds=args.seeds, rows_wanted=wanted,
                                       overrides=overrides))
    rows = merged_rows(rows, merged, renames=dict(r.split("=", 1) for r in args.rename))
    table = summarise(rows)
    first = next(iter(rows.values()))
    headline = first["test"] if "test" in first else first["runs"][0]["test"]
    text = markdown(dataset.name, table, rows, n_queries=int(headline["n_queries"]), n_users=int(headline["n_users"]))
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or dataset.name
    (RESULTS / f"quality_{out}.md").write_text(text)
    (RESULTS / f"quality_{out}.json").write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    main()
