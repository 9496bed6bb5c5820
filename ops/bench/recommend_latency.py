"""Latency of ``Retriever.recommend`` (features -> query tower -> Qdrant search) against its parts run alone.

    .venv/bin/python ops/bench/recommend_latency.py [--items 9742] [--users 610] [--calls 500] [--storage memory|edge]

Prints p50/p99 of each stage inside the retriever and of the same three steps run alone, in one process, then
total / (sum of the parts alone) at p50 (target: <= 1.2, i.e. the retriever adds little glue of its own).
The corpus and users are synthetic, shaped like MovieLens latest-small (9,742 movies, 610 users, 64-d vectors);
online features come from an in-memory source, so "features" measures the retriever's side of that call only.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import sys
import time
from pathlib import Path

import numpy as np

from tower_platform.vectors.writer import QdrantEmbeddingWriter
from tower_platform.serving.onnx_tower import OnnxTower
from tower_platform.serving.retriever import Retriever
from tower_platform.vectors.edge import EdgeVectorStore
from tower_platform.vectors.store import QdrantVectorStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the reference tower of the tests
from reference_tower import ReferenceFeature, build_reference_tower  # noqa: E402

HISTORY_LEN = 20


def _load_writer_bench():  # the synthetic corpus and item tower of the writer benchmark, next to this file
    import importlib.util

    spec = importlib.util.spec_from_file_location("writer_throughput", Path(__file__).with_name("writer_throughput.py"))
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


class InMemoryQueryFeatures:
    def __init__(self, rows: dict[str, dict]) -> None:
        self.rows = rows

    def query_features(self, user_id: str) -> dict:
        return self.rows[user_id]


def synthetic_users(n_users: int, n_items: int, *, seed: int = 1) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, HISTORY_LEN + 5, size=n_users)  # some longer than max_len, some empty
    histories = np.split(rng.integers(1, n_items + 1, size=int(lengths.sum())).astype(str), np.cumsum(lengths)[:-1])
    return {
        f"u{u}": {"user_id": f"u{u}", "user_history__recent_items": h.tolist() or None}
        for u, h in enumerate(histories)
    }


def percentiles(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values)
    return float(np.percentile(array, 50)), float(np.percentile(array, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=9742)
    parser.add_argument("--users", type=int, default=610)
    parser.add_argument("--dimension", type=int, default=64)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--storage", choices=("memory", "edge"), default="memory")
    args = parser.parse_args()

    bench = _load_writer_bench()
    work = Path(tempfile.mkdtemp(prefix="tower-bench-"))
    store = QdrantVectorStore.memory() if args.storage == "memory" else EdgeVectorStore(work / "vectors")
    try:
        corpus = bench.synthetic_corpus(args.items)
        item_path = bench.item_tower(work / "item.onnx", n_items=args.items, dimension=args.dimension)
        QdrantEmbeddingWriter(store, item_path, progress=False).write(corpus)
        store.swap_alias("bench", "bench__v1", previous=None)
        query_path = build_reference_tower(
            work / "query.onnx",
            features=[
                ReferenceFeature("user_id", "categorical", tuple(f"u{u}" for u in range(args.users))),
                ReferenceFeature("user_history__recent_items", "multi_categorical",
                                 tuple(str(i) for i in range(1, args.items + 1)), max_len=HISTORY_LEN),
            ],
            dimension=args.dimension, model_name="bench", model_version=1, seed=5,
        )
        features = InMemoryQueryFeatures(synthetic_users(args.users, args.items))
        tower = OnnxTower(query_path, threads=1)
        retriever = Retriever(store, tower, features, model="bench", expected_version=1)
        users = [f"u{u}" for u in np.random.default_rng(2).integers(0, args.users, size=args.calls)]
        for user in users[:20]:  # warm-up
            retriever.recommend(user, k=args.k)

        inside = {"features": [], "query tower": [], "search": [], "total": []}
        alone = {"features": [], "query tower": [], "search": []}
        for user in users:  # interleaved: the retriever and the parts alone see the same machine load
            t = retriever.recommend(user, k=args.k).timings
            inside["features"].append(t.features_ms)
            inside["query tower"].append(t.query_tower_ms)
            inside["search"].append(t.search_ms)
            inside["total"].append(t.total_ms)

            t0 = time.perf_counter()
            row = dict(features.query_features(user))
            t1 = time.perf_counter()
            vector = tower.run(tower.feeds({name: [row.get(name)] for name in tower.input_names}))[0]  # [D]
            t2 = time.perf_counter()
            store.search("bench", vector, limit=args.k, exclude_item_ids=row["user_history__recent_items"] or ())
            t3 = time.perf_counter()
            alone["features"].append((t1 - t0) * 1e3)
            alone["query tower"].append((t2 - t1) * 1e3)
            alone["search"].append((t3 - t2) * 1e3)

        print(f"storage={args.storage} items={args.items} users={args.users} dimension={args.dimension} "
              f"calls={args.calls} k={args.k}")
        print(f"{'stage':<12} {'retriever p50':>14} {'p99':>9} {'alone p50':>11} {'p99':>9}   (ms)")
        for stage in ("features", "query tower", "search"):
            p50, p99 = percentiles(inside[stage])
            a50, a99 = percentiles(alone[stage])
            print(f"{stage:<12} {p50:>14.3f} {p99:>9.3f} {a50:>11.3f} {a99:>9.3f}")
        total50, total99 = percentiles(inside["total"])
        parts50 = sum(percentiles(alone[s])[0] for s in alone)
        print(f"{'total':<12} {total50:>14.3f} {total99:>9.3f} {parts50:>11.3f} {'':>9}   (alone: sum of p50s)")
        print(f"ratio total p50 / sum of parts alone p50: {total50 / parts50:.2f}   (target <= 1.20)")
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
