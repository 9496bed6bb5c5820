"""The whole pipeline at scale: a synthetic catalogue through ingest, the point-in-time training set, one epoch of
training, export, indexing and 1,000 recommend calls, at the full size and at a tenth of it.

The catalogue is the retail generator of the tests (``tests/retail_dataset.py``): items with a category (sub class)
and two attributes (colours, a multi-valued list; price, numeric), customers with two attributes, purchases in
baskets of 2-20 with a price paid; query features: recent items, top sub classes, counts, windowed counts, mean price,
hours since the previous purchase; item features: counts, a 7-day trend, mean price, days on sale. The full size is
1,000,000 items, 200,000 users and 5,000,000 interactions.

Each stage runs in its own process (its peak resident memory is its own) on the same ``$TOWER_HOME``:

    generate      the synthetic files (not a platform stage: reported, not judged)
    ingest        raw files -> Feast source tables
    features      feast apply + materialise the online store
    training_set  the audited point-in-time training set
    train         the item corpus as of the test cutoff, then 1 epoch of the two towers on train + validation
    export        ONNX towers (parity-checked), monitor inputs, spec; registered as version 1
    index         the serving corpus through item.onnx into the embedded engine, HNSW graph, verification with recall
    recommend     promote, then 1,000 recommend calls (online features -> query.onnx -> search) for random users

The towers train with ``training.sparse_embeddings`` (``towers/training/sparse.py``): with dense gradients every step
zeroes, clips and updates the whole item-id table, so a step's cost grows with the catalogue (measured on the loaded
2-core machine: 0.44 s per step at 100k ids against 2.18 s at 1M for the table alone; row-sparse: 0.45 s and 0.61 s).

It prints each stage's seconds and peak RSS at both sizes, then each stage's growth from the tenth to the full size
against the target (10x the data should cost <= ~13x the time), and the peak of the largest stage.

    nice .venv/bin/python ops/bench/pipeline_scale.py                 # 1/10 then full size
    nice .venv/bin/python ops/bench/pipeline_scale.py --scale 0.01    # develop: 1/1000 and 1/100 of the full size
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
sys.path.insert(0, str(REPO / "tests"))  # the retail generator
from peak_memory import PeakMemory  # noqa: E402

STAGES = ("generate", "ingest", "features", "training_set", "train", "export", "index", "recommend")
JUDGED = STAGES[1:]  # generate writes the synthetic files: not the platform's cost
FULL = {"items": 1_000_000, "users": 200_000, "interactions": 5_000_000}
CATEGORIES = 2_000
RECOMMEND_CALLS = 1_000
TARGET_GROWTH = 13.0  # 10x the data: at most ~13x the time
MODEL = "products"
TRAINING = """training:
  training: {epochs: 1, batch_size: 2048, progress: false, sparse_embeddings: true}
  towers: {embedding_dim: 32, hidden_dims: [64], output_dim: 64}
"""


@dataclass(frozen=True)
class Paths:
    folder: Path

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def config(self) -> Path:
        return self.data / "retail.yaml"

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def training_set(self) -> Path:
        return self.folder / "training_set.parquet"

    @property
    def training_meta(self) -> Path:
        return self.folder / "training_set.pkl"

    @property
    def towers(self) -> Path:
        return self.folder / "towers.pt"

    @property
    def corpus(self) -> Path:
        return self.folder / "corpus.parquet"


def _store(paths: Paths) -> Any:
    from tower_platform.features.materialization import open_feature_store
    from tower_platform.paths import packaged_feature_repo

    return open_feature_store(repo_dir=packaged_feature_repo(), home_dir=paths.home)


def _training_set(paths: Paths) -> Any:
    import pyarrow.parquet as pq

    with open(paths.training_meta, "rb") as handle:
        empty = pickle.load(handle)
    return replace(empty, table=pq.read_table(paths.training_set))


def _settings(paths: Paths) -> Any:
    from tower_platform.settings import Settings

    return Settings(home=paths.home)


# -- the stages (each returns a few figures of what it did) -----------------------------------------------------------
def generate(paths: Paths, size: dict[str, int]) -> dict[str, Any]:
    from retail_dataset import write_retail_dataset

    write_retail_dataset(paths.data, interactions=size["interactions"], users=size["users"], items=size["items"],
                         categories=CATEGORIES, training=TRAINING)
    return {}


def ingest(paths: Paths, size: dict[str, int]) -> dict[str, Any]:
    from tower_platform.datasets import ingest as run_ingest
    from tower_platform.datasets import load_dataset_config

    report = run_ingest(load_dataset_config(paths.config), home_dir=paths.home)
    return {"rows": dict(report.rows)}


def features(paths: Paths, size: dict[str, int]) -> dict[str, Any]:
    from tower_platform.features.materialization import apply_and_materialize
    from tower_platform.paths import packaged_feature_repo

    apply_and_materialize(repo_dir=packaged_feature_repo(), home_dir=paths.home)
    return {}


def training_set(paths: Paths, size: dict[str, int]) -> dict[str, Any]:
    from tower_platform.datasets import load_dataset_config
    from tower_platform.features.training_set import build_training_set, write_training_set

    built = build_training_set(_store(paths), load_dataset_config(paths.config))
    write_training_set(built, paths.training_set)
    with open(paths.training_meta, "wb") as handle:
        pickle.dump(replace(built, table=built.table.schema.empty_table()), handle)  # a slice pickles its buffers
    return {"rows": built.table.num_rows, "columns": built.table.num_columns}


def train(paths: Paths, size: dict[str, int]) -> dict[str, Any]:
    from tower_platform.datasets import load_dataset_config
    from tower_platform.pipeline.config import tower_config_from
    from tower_platform.pipeline.train import period_rows, split_times
    from towers.training import fit_two_tower

    built = _training_set(paths)
    _, test_time = split_times(built)
    corpus = _store(paths).item_corpus(test_time)
    rows = period_rows(built.table, ("train", "validation"))
    config = tower_config_from(load_dataset_config(paths.config))
    towers = fit_two_tower(rows, corpus=corpus, schema=built.schema, config=config, progress=False)
    towers.save(paths.towers)
    return {"rows": rows.num_rows, "corpus": corpus.num_rows, "steps": towers.history.steps if towers.history else None}


class _Unevaluated:
    """What the export records as metrics: this benchmark times training, not the evaluation protocol."""

    def headline(self) -> dict[str, Any]:
        return {"evaluated": False}


def export(paths: Paths, size: dict[str, int]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from tower_platform.pipeline.export import export_version
    from tower_platform.pipeline.register import register_export
    from tower_platform.pipeline.train import TrainedVersion
    from tower_platform.registry.migration import upgrade_schema
    from tower_platform.registry.store import SqlRegistryStore
    from towers.training import TrainedTowers

    towers = TrainedTowers.load(paths.towers)
    built = _training_set(paths)
    corpus = _store(paths).item_corpus(datetime.now(UTC))  # what the version serves: exported, then indexed
    pq.write_table(corpus, paths.corpus)  # the index stage runs in another process
    trained = TrainedVersion(towers=towers, validation=_Unevaluated(), test=_Unevaluated(), best_epoch=None,
                             epochs_refit=None, config=towers.config)
    settings = _settings(paths)
    upgrade_schema(settings.registry_url)
    exported = export_version(trained, built, corpus, model=MODEL, version=1, artifacts_dir=settings.artifacts_dir)
    with SqlRegistryStore(settings.registry_url) as registry:
        register_export(registry, exported.folder, model=MODEL, actor="pipeline_scale")
    return {"corpus": corpus.num_rows, "max_abs_diff": exported.max_abs_diff}


def index(paths: Paths, size: dict[str, int]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from tower_platform.pipeline.index import index_version
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.store import open_vector_store

    corpus = pq.read_table(paths.corpus)
    settings = _settings(paths)
    with SqlRegistryStore(settings.registry_url) as registry, open_vector_store(settings) as vectors:
        indexed = index_version(registry, vectors, corpus, model=MODEL, version=1, actor="pipeline_scale",
                                progress=False)
    return {"items": indexed.items, "write_items_per_s": round(indexed.items_per_s), "build_s": indexed.build_s,
            "verify_s": indexed.verify_s, "recall": indexed.recall}


def recommend(paths: Paths, size: dict[str, int]) -> dict[str, Any]:
    import numpy as np

    from tower_platform.pipeline.recommend import QUERY_TOWER
    from tower_platform.registry.promotion import promote
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.serving.onnx_tower import OnnxTower
    from tower_platform.serving.retriever import OnlineQueryFeatures, Retriever
    from tower_platform.vectors.store import open_vector_store

    settings = _settings(paths)
    store = _store(paths)
    users = store.read_source("user_profile").column("user_id").to_pylist() if _has_users(store) else None
    with SqlRegistryStore(settings.registry_url) as registry, open_vector_store(settings) as vectors:
        promote(registry, vectors, MODEL, 1, actor="pipeline_scale")
        production = registry.production_version(MODEL)
        artifact = production.artifact(QUERY_TOWER)
        tower = OnnxTower(artifact.path, expected_sha256=artifact.sha256)
        features = OnlineQueryFeatures(store, service_name=tower.metadata.serving.query_feature_service,
                                       user_key=str(tower.metadata.schema.get("user_id") or "user_id"))
        retriever = Retriever(vectors, tower, features, model=MODEL, expected_version=production.version)
        if users is None:
            users = _training_set(paths).table.column("user_id").unique().to_pylist()
        picked = np.random.default_rng(0).choice(len(users), size=RECOMMEND_CALLS, replace=True)
        totals = []
        for position in picked.tolist():
            result = retriever.recommend(str(users[position]), k=10)
            totals.append(result.timings.total_ms)
    return {"calls": len(totals), "p50_ms": round(float(np.percentile(totals, 50)), 2),
            "p99_ms": round(float(np.percentile(totals, 99)), 2)}


def _has_users(store: Any) -> bool:
    return "user_profile" in (store.source_schema().get("views") or {})


# -- harness --------------------------------------------------------------------------------------------------------
def run_stage(stage: str, folder: Path, size: dict[str, int]) -> dict[str, Any]:
    """One stage in this process: seconds, peak RSS, the RSS before the stage (after imports), its figures."""
    os.environ["TOWER_HOME"] = str(Path(folder) / "home")
    paths = Paths(Path(folder))
    if stage != "generate":
        import feast  # noqa: F401  the baseline holds the libraries every platform stage loads
        import torch  # noqa: F401

        import tower_platform.features.store  # noqa: F401
    action = globals()[stage]
    with PeakMemory() as memory:
        start = time.perf_counter()
        figures = action(paths, size)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak": memory.peak, "baseline": memory.baseline, "figures": figures}


def measure(size: dict[str, int], folder: Path, stages: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    label = f"{size['items']:>9,} items {size['users']:>7,} users {size['interactions']:>9,} interactions"
    for stage in stages:
        out = subprocess.run(
            [sys.executable, __file__, "--stage", stage, "--folder", str(folder), "--size", json.dumps(size)],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            print(f"{label}  {stage:<12} FAILED (exit {out.returncode}):\n{out.stderr[-4000:]}", flush=True)
            raise SystemExit(1)
        results[stage] = r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{label}  {stage:<12} {r['seconds']:9.2f} s  peak RSS {r['peak'] / 2**20:8,.0f} MiB "
              f"(above baseline {(r['peak'] - r['baseline']) / 2**20:7,.0f} MiB)  {json.dumps(r['figures'])}",
              flush=True)
    return results


def scaled(fraction: float) -> dict[str, int]:
    return {key: max(1, round(value * fraction)) for key, value in FULL.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="the larger size as a share of the full size")
    parser.add_argument("--ratio", type=float, default=10.0, help="the larger size over the reference size")
    parser.add_argument("--only", choices=("reference", "large"), help="run one of the two sizes")
    parser.add_argument("--keep", type=Path, default=None, help="keep the data and homes under this folder")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.folder, json.loads(args.size)), default=str))
        return 0

    large, reference = scaled(args.scale), scaled(args.scale / args.ratio)
    root = args.keep or Path(tempfile.mkdtemp(prefix="pipeline-scale-"))
    print(f"pipeline_scale: {CATEGORIES:,} categories; reference {reference}, large {large}; cpus {os.cpu_count()}; "
          f"scratch {root}", flush=True)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        for name, size in (("reference", reference), ("large", large)):
            if args.only in (None, name):
                folder = root / f"items{size['items']}"
                shutil.rmtree(folder, ignore_errors=True)
                results[name] = measure(size, folder, STAGES)
                if args.keep is None:
                    shutil.rmtree(folder, ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if len(results) < 2:
        return 0
    data_ratio = large["interactions"] / reference["interactions"]
    worst, largest = 0.0, 0.0
    for stage in STAGES:
        ref, big = results["reference"][stage], results["large"][stage]
        growth = big["seconds"] / max(ref["seconds"], 1e-3)
        memory = max(big["peak"] - big["baseline"], 1) / max(ref["peak"] - ref["baseline"], 2**20)
        judged = stage in JUDGED
        if judged:
            worst, largest = max(worst, growth), max(largest, big["peak"] / 2**30)
        note = (f"(target <= x{TARGET_GROWTH:.0f} for x{data_ratio:.0f} the data)" if judged
                else "(synthetic data, not judged)")
        print(f"{stage:<12} time x{growth:6.1f} {note}  memory above baseline x{memory:6.2f}  "
              f"peak {big['peak'] / 2**30:5.2f} GiB")
    print(f"largest stage growth x{worst:.1f} (target <= x{TARGET_GROWTH:.0f}); largest stage peak {largest:.2f} GiB "
          "(target: within the machine's 24 GiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
