"""Scale of the embedded vector store: write rate, HNSW build, top-100 latency and recall@100 at 100k..1M items.

Synthetic clustered unit vectors (64-d by default): ``--clusters`` centres on the sphere, each item its centre plus
Gaussian noise of norm ~``--spread``, renormalised; an item's category is its cluster modulo ``--categories``. Queries
are fresh draws from the same mixture (like user vectors), never stored items.

For each size it reports the write rate (``upsert`` of every item, index build apart), the HNSW build time
(``finish_bulk_load``), p50/p99 of single top-100 searches with and without a category filter, and recall@100 of the
default search against exact search. The reference in the same run is qdrant-client's local on-disk storage (the
embedded path the engine replaced, opened here directly with ``QdrantClient(path=...)``: it is no longer a backend)
at ``--reference-size`` items; the ratio of write rates is printed with its target.

    python ops/bench/vector_scale.py --sizes 100000,1000000 --no-build-at-1m

The last lines are one ``RESULT items=N write_items_per_s=X build_s=Y p50_ms=Z p99_ms=W recall_at_100=R`` per size.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tower_platform.vectors.edge import EdgeIndexConfig, EdgeVectorStore
from tower_platform.vectors.store import QdrantVectorStore

WRITE_CHUNK = 50_000
TARGET_WRITE_RATIO = 100.0  # embedded engine vs qdrant-client local storage
TARGET_1M_WRITE_S = 60.0
TARGET_RECALL = 0.95
TARGET_P50_MS = 5.0


@dataclass
class Mixture:
    """A fixed Gaussian mixture on the unit sphere; items and queries are drawn from it."""

    centres: np.ndarray  # [C, D] unit rows
    spread: float
    categories: int

    @classmethod
    def build(cls, *, dim: int, clusters: int, spread: float, categories: int, seed: int) -> Mixture:
        centres = np.random.default_rng(seed).normal(size=(clusters, dim)).astype(np.float32)  # [C, D]
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        return cls(centres=centres, spread=spread, categories=categories)

    def draw(self, n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` unit vectors [n, D] and their cluster labels [n]."""
        rng = np.random.default_rng(seed)
        dim = self.centres.shape[1]
        labels = rng.integers(0, len(self.centres), n)  # [n]
        rows = self.centres[labels] + (self.spread / np.sqrt(dim)) * rng.normal(size=(n, dim)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)  # [n, D]
        return rows, labels


def write_items(store, name: str, mixture: Mixture, n: int, *, seed: int) -> float:
    """Create ``name`` and upsert ``n`` items in chunks; seconds spent in create + upsert (drawing excluded)."""
    spent = 0.0
    store.create_collection(name, dimension=mixture.centres.shape[1])
    for start in range(0, n, WRITE_CHUNK):
        size = min(WRITE_CHUNK, n - start)
        rows, labels = mixture.draw(size, seed=seed * 1_000_003 + start)
        ids = [str(start + k) for k in range(size)]
        payloads = [{"category": f"c{label % mixture.categories}"} for label in labels.tolist()]
        began = time.perf_counter()
        store.upsert(name, ids, rows, payloads)
        spent += time.perf_counter() - began
    return spent


def latency_ms(store, name: str, queries: np.ndarray, *, categories: list[str | None]) -> np.ndarray:
    """Wall time of one top-100 search per query row, in ms [Q]."""
    times = []
    for row, category in zip(queries, categories, strict=True):
        began = time.perf_counter()
        store.search(name, row, limit=100, category=category)
        times.append((time.perf_counter() - began) * 1000.0)
    return np.asarray(times)


def recall_at_100(store: EdgeVectorStore, name: str, queries: np.ndarray, *, category: str | None = None) -> float:
    """Mean share of the exact top-100 that the default search returns."""
    exact = store.search_many(name, queries, limit=100, exact=True, category=category)
    default = [store.search(name, row, limit=100, category=category) for row in queries]
    overlaps = [
        len({h.item_id for h in d} & {h.item_id for h in e}) / max(1, len(e)) for d, e in zip(default, exact, strict=True)
    ]
    return float(np.mean(overlaps))


def bench_edge(root: Path, mixture: Mixture, n: int, *, build: bool, index: EdgeIndexConfig, queries: int) -> dict:
    folder = root / f"edge_{n}"
    shutil.rmtree(folder, ignore_errors=True)
    # exact_below above n when the build is skipped: the size is then searched exactly, as the store would.
    config = index if build else dataclasses.replace(index, exact_below=n + 1)
    with EdgeVectorStore(folder, index=config) as store:
        write_s = write_items(store, "bench", mixture, n, seed=1)
        began = time.perf_counter()
        store.finish_bulk_load("bench")
        build_s = time.perf_counter() - began
        query_rows, labels = mixture.draw(queries, seed=2)
        cats = [f"c{label % mixture.categories}" for label in labels.tolist()]
        store.search("bench", query_rows[0], limit=100)  # warm the caches once
        plain = latency_ms(store, "bench", query_rows, categories=[None] * queries)
        filtered = latency_ms(store, "bench", query_rows, categories=cats)
        recall = recall_at_100(store, "bench", query_rows)
        recall_filtered = recall_at_100(store, "bench", query_rows[: max(1, queries // 4)], category=cats[0])
    disk_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "items": n, "write_rate": n / write_s, "write_s": write_s, "build_s": build_s if build else None,
        "p50": float(np.percentile(plain, 50)), "p99": float(np.percentile(plain, 99)),
        "p50_cat": float(np.percentile(filtered, 50)), "p99_cat": float(np.percentile(filtered, 99)),
        "recall": recall, "recall_cat": recall_filtered, "disk_mb": disk_mb,
    }


def bench_local_reference(root: Path, mixture: Mixture, n: int) -> float:
    """Items per second written into qdrant-client's local storage (the embedded path being replaced)."""
    from qdrant_client import QdrantClient

    folder = root / "local_reference"
    shutil.rmtree(folder, ignore_errors=True)
    with QdrantVectorStore(QdrantClient(path=str(folder)), kind="local", where=str(folder)) as store:
        seconds = write_items(store, "bench", mixture, n, seed=3)
    shutil.rmtree(folder, ignore_errors=True)
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated item counts")
    parser.add_argument("--no-build-at-1m", action="store_true", help="write 1M without HNSW; build at 200k instead")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=1024)
    parser.add_argument("--spread", type=float, default=1.0, help="noise norm around a centre (1.0: cos ~0.7)")
    parser.add_argument("--categories", type=int, default=50)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--reference-size", type=int, default=5000)
    parser.add_argument("--m", type=int, default=EdgeIndexConfig.m)
    parser.add_argument("--ef-construct", type=int, default=EdgeIndexConfig.ef_construct)
    parser.add_argument("--ef", type=int, default=EdgeIndexConfig.ef)
    parser.add_argument("--root", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.no_build_at_1m and 200_000 not in sizes:
        sizes = sorted({*sizes, 200_000})
    index = EdgeIndexConfig(m=args.m, ef_construct=args.ef_construct, ef=args.ef)
    mixture = Mixture.build(
        dim=args.dim, clusters=args.clusters, spread=args.spread, categories=args.categories, seed=0
    )
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="vector_scale_"))
    print(f"vectors: {args.dim}-d, {args.clusters} clusters, spread {args.spread}, {args.categories} categories; "
          f"index m={index.m} ef_construct={index.ef_construct} ef={index.ef} exact_below={index.exact_below}; "
          f"cpus={os.cpu_count()}; scratch {root}", flush=True)

    local_rate = bench_local_reference(root, mixture, args.reference_size)
    print(f"reference: qdrant-client local storage wrote {args.reference_size} items at {local_rate:,.0f} items/s",
          flush=True)

    results = []
    for n in sizes:
        build = not (args.no_build_at_1m and n >= 1_000_000)
        r = bench_edge(root, mixture, n, build=build, index=index, queries=args.queries)
        results.append(r)
        build_text = f"{r['build_s']:.1f} s" if r["build_s"] is not None else "skipped (exact search)"
        print(
            f"{n:>9,} items: write {r['write_s']:.1f} s ({r['write_rate']:,.0f} items/s, "
            f"{r['write_rate'] / local_rate:,.0f}x local storage (target >= {TARGET_WRITE_RATIO:.0f}x)); "
            f"build {build_text}; top-100 p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms "
            f"(target p50 <= {TARGET_P50_MS:.0f} ms); with category p50 {r['p50_cat']:.2f} ms p99 {r['p99_cat']:.2f} ms; "
            f"recall@100 {r['recall']:.3f} (target >= {TARGET_RECALL}), with category {r['recall_cat']:.3f}; "
            f"{r['disk_mb']:,.0f} MB on disk",
            flush=True,
        )
        if n == 1_000_000:
            print(f"1M items written in {r['write_s']:.1f} s (target <= {TARGET_1M_WRITE_S:.0f} s)", flush=True)
    if not args.root:
        shutil.rmtree(root, ignore_errors=True)
    for r in results:
        build_s = f"{r['build_s']:.1f}" if r["build_s"] is not None else "skipped"
        print(
            f"RESULT items={r['items']} write_items_per_s={r['write_rate']:.0f} build_s={build_s} "
            f"p50_ms={r['p50']:.2f} p99_ms={r['p99']:.2f} recall_at_100={r['recall']:.3f}"
        )


if __name__ == "__main__":
    main()
