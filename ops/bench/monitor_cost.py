"""Cost of an alignment report: 10k, 100k and 1M item vectors (64-d, 50 categories) against 10k test queries.

    .venv/bin/python ops/bench/monitor_cost.py [--sizes 10000 100000 1000000] [--queries 10000] [--k 100]

Each size runs in a fresh child process (so that its peak memory is its own): it builds a synthetic collection and
query set, then times :func:`tower_platform.monitor.alignment.alignment_figures` (exact top-K in chunks over every
item, per-segment covariances, norms, recall, coverage) and samples the process's resident memory every 5 ms.
Printed per size: seconds, microseconds per item, the per-item time relative to the smallest size (linear scaling
keeps it near 1), and the peak memory above the data itself, which the chunk size bounds
(query_chunk x item_chunk float32 scores), whatever queries x items is.

Reference, in the same process as the smallest size: the same top-K from one full (queries x items) score matrix;
the ratio of the chunked report to it, and the memory the full matrix would need at every size, are printed too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time

import numpy as np

DIMENSION = 64
N_CATEGORIES = 50


def _synthetic(n_items: int, n_queries: int, *, seed: int = 0):
    from tower_platform.monitor.alignment import QuerySet, ServedItems

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n_items, DIMENSION), dtype=np.float32)  # (N, D)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    categories = np.asarray([f"c{c:02d}" for c in range(N_CATEGORIES)], dtype=object)[
        np.minimum(rng.zipf(1.3, size=n_items) - 1, N_CATEGORIES - 1)]  # long-tailed category sizes
    counts = rng.zipf(1.6, size=n_items).astype(np.int64)
    buckets = np.asarray(["head", "torso", "tail"], dtype=object)[rng.integers(0, 3, size=n_items)]
    items = ServedItems(np.arange(n_items).astype(str), vectors, categories, buckets, counts)
    queries = rng.standard_normal((n_queries, DIMENSION), dtype=np.float32)  # (Q, D)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    lengths = rng.integers(0, 40, size=n_queries)  # history items to exclude per query
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    history = rng.integers(0, n_items, size=int(indptr[-1])).astype(np.int64)
    return items, QuerySet(queries, rng.integers(0, n_items, size=n_queries).astype(np.int64), indptr, history)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakMemory:
    """Resident memory sampled every 5 ms while the block runs; ``peak_above`` = peak - RSS at entry."""

    def __enter__(self) -> PeakMemory:
        self.start = _rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def peak_above(self) -> int:
        return self.peak - self.start


def _full_matrix_top_k(items, queries, *, k: int) -> np.ndarray:
    import torch

    scores = torch.from_numpy(queries.vectors) @ torch.from_numpy(items.vectors).T  # (Q, N): the whole matrix
    rows = np.repeat(np.arange(len(queries)), np.diff(queries.history_indptr))
    scores[torch.from_numpy(rows), torch.from_numpy(queries.history_indices)] = -torch.inf
    return torch.topk(scores, k, dim=1).indices.numpy()


def _one_size(n_items: int, n_queries: int, k: int, reference: bool, out: multiprocessing.Queue) -> None:
    from tower_platform.monitor.alignment import ITEM_CHUNK, QUERY_CHUNK, alignment_figures, top_k_items

    items, queries = _synthetic(n_items, n_queries)
    alignment_figures(items, QuerySet_head(queries, 64), k=k)  # warm-up: torch kernels, allocator
    with PeakMemory() as memory:
        started = time.perf_counter()
        figures = alignment_figures(items, queries, k=k)
        seconds = time.perf_counter() - started
    result = {"items": n_items, "seconds": seconds, "peak_above": memory.peak_above,
              "segments": len(figures.segments), "chunk_bytes": QUERY_CHUNK * ITEM_CHUNK * 4}
    if reference:
        started = time.perf_counter()
        chunked = top_k_items(queries, items.vectors, k=k)
        result["chunked_top_k_s"] = time.perf_counter() - started
        with PeakMemory() as full_memory:
            started = time.perf_counter()
            full = _full_matrix_top_k(items, queries, k=k)
            result["full_top_k_s"] = time.perf_counter() - started
        result["full_peak_above"] = full_memory.peak_above
        result["top_k_agree"] = float(np.mean(np.sort(full, axis=1) == np.sort(chunked, axis=1)))
    out.put(result)


def QuerySet_head(queries, n: int):  # noqa: N802 - a slice of a QuerySet for the warm-up
    from tower_platform.monitor.alignment import QuerySet

    return QuerySet(queries.vectors[:n], queries.targets[:n], queries.history_indptr[: n + 1],
                    queries.history_indices[: queries.history_indptr[n]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()
    import torch

    context = multiprocessing.get_context("spawn")
    print(f"alignment report: {args.queries:,} queries, K={args.k}, {DIMENSION}-d, {N_CATEGORIES} categories, "
          f"torch threads {torch.get_num_threads()}")
    results = []
    for position, size in enumerate(sorted(args.sizes)):
        queue: multiprocessing.Queue = context.Queue()
        child = context.Process(target=_one_size, args=(size, args.queries, args.k, position == 0, queue))
        child.start()
        results.append(queue.get())
        child.join()
    base = results[0]["seconds"] / results[0]["items"]
    print(f"{'items':>10} {'seconds':>9} {'µs/item':>9} {'vs smallest':>12} {'peak MiB':>9} {'full matrix MiB':>16}")
    for r in results:
        per_item = r["seconds"] / r["items"]
        full_mib = args.queries * r["items"] * 4 / 2**20
        print(f"{r['items']:>10,} {r['seconds']:>9.2f} {per_item * 1e6:>9.3f} {per_item / base:>12.2f} "
              f"{r['peak_above'] / 2**20:>9.0f} {full_mib:>16,.0f}")
    ref = results[0]
    print(f"score block bound: {ref['chunk_bytes'] / 2**20:.0f} MiB (query_chunk x item_chunk float32)")
    print(f"reference at {ref['items']:,} items: chunked top-K {ref['chunked_top_k_s']:.2f} s vs full-matrix top-K "
          f"{ref['full_top_k_s']:.2f} s (ratio {ref['chunked_top_k_s'] / ref['full_top_k_s']:.2f}), peak "
          f"{ref['full_peak_above'] / 2**20:.0f} MiB for the full matrix; top-K sets agree on {ref['top_k_agree']:.4f}")


if __name__ == "__main__":
    main()
