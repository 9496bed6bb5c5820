"""P6, cost of an alignment report: 10k, 100k and 1M item vectors (64-d, 2,000 categories) against 10k test queries.

    .venv/bin/python ops/bench/monitor_cost.py [--sizes 10000 100000 1000000] [--queries 10000] [--k 100]

Each size runs in a fresh child process (so that its peak memory is its own): it builds a synthetic collection
(unit vectors, 2,000 categories of Zipf-like sizes, head / torso / tail buckets) and query set (unit vectors, 0-39
history items each), then times :func:`tower_platform.monitor.alignment.alignment_figures` -- exact top-K over every
item (bfloat16 screen, exact rescoring), per-segment covariances and the bounded distance, norms, recall, coverage
and the pooled small categories -- and samples the process's resident memory every 5 ms. Printed per size: seconds,
microseconds per item, the per-item time relative to the smallest size (linear scaling keeps it near 1), and the
peak memory above the data itself (what a dense queries x items matrix would need is printed beside it).

Reference, in the same process as the largest size: the exact top-K as the monitor computed it before, one float32
GEMM per (query chunk, item chunk) block and a torch.topk of every block (``reference_top_k`` below). Printed: the
ratio of the whole report to that top-K alone, the share of the queries whose top-K sets agree, and the target.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time

import numpy as np

DIMENSION = 64
N_CATEGORIES = 2_000
TARGET_SECONDS = 30.0  # P6: 1M items x 10k queries
TARGET_ITEMS = 1_000_000


def _synthetic(n_items: int, n_queries: int, *, seed: int = 0):
    from tower_platform.monitor.alignment import QuerySet, ServedItems

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n_items, DIMENSION), dtype=np.float32)  # (N, D)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    names = np.asarray([f"c{c:04d}" for c in range(N_CATEGORIES)], dtype=object)
    categories = names[np.minimum(rng.zipf(1.3, size=n_items) - 1, N_CATEGORIES - 1)]  # long-tailed sizes
    counts = rng.zipf(1.6, size=n_items).astype(np.int64)
    buckets = np.asarray(["head", "torso", "tail"], dtype=object)[rng.integers(0, 3, size=n_items)]
    items = ServedItems(np.arange(n_items).astype(str), vectors, categories, buckets, counts)
    queries = rng.standard_normal((n_queries, DIMENSION), dtype=np.float32)  # (Q, D)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    lengths = rng.integers(0, 40, size=n_queries)  # history items to exclude per query
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    history = rng.integers(0, n_items, size=int(indptr[-1])).astype(np.int64)
    return items, QuerySet(queries, rng.integers(0, n_items, size=n_queries).astype(np.int64), indptr, history)


def reference_top_k(queries, item_vectors: np.ndarray, *, k: int, query_chunk: int = 256,
                    item_chunk: int = 65_536) -> np.ndarray:
    """The previous method: a float32 GEMM per block and a torch.topk of every block, merged into a running top-K."""
    import torch

    items = torch.from_numpy(np.ascontiguousarray(item_vectors, dtype=np.float32))
    n_items = items.shape[0]
    top = np.full((len(queries), k), -1, dtype=np.int64)
    indptr = queries.history_indptr
    for q0 in range(0, len(queries), query_chunk):
        q1 = min(q0 + query_chunk, len(queries))
        block = torch.from_numpy(np.ascontiguousarray(queries.vectors[q0:q1], dtype=np.float32))
        hist_rows = np.repeat(np.arange(q1 - q0), np.diff(indptr[q0 : q1 + 1]))
        hist_items = queries.history_indices[indptr[q0] : indptr[q1]]
        best_scores = torch.full((q1 - q0, k), -torch.inf)
        best_items = torch.full((q1 - q0, k), -1, dtype=torch.int64)
        for i0 in range(0, n_items, item_chunk):
            i1 = min(i0 + item_chunk, n_items)
            scores = block @ items[i0:i1].T
            inside = (hist_items >= i0) & (hist_items < i1)
            scores[torch.from_numpy(hist_rows[inside]), torch.from_numpy(hist_items[inside] - i0)] = -torch.inf
            chunk_scores, chunk_items = torch.topk(scores, min(k, i1 - i0), dim=1)
            merged_scores = torch.cat([best_scores, chunk_scores], dim=1)
            merged_items = torch.cat([best_items, chunk_items + i0], dim=1)
            best_scores, position = torch.topk(merged_scores, k, dim=1)
            best_items = merged_items.gather(1, position)
        top[q0:q1] = best_items.numpy()
    return top


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


def _head(queries, n: int):
    from tower_platform.monitor.alignment import QuerySet

    return QuerySet(queries.vectors[:n], queries.targets[:n], queries.history_indptr[: n + 1],
                    queries.history_indices[: queries.history_indptr[n]])


def _one_size(n_items: int, n_queries: int, k: int, reference: bool, out: multiprocessing.Queue) -> None:
    from tower_platform.monitor.alignment import alignment_figures
    from tower_platform.monitor.exact_top_k import native_bfloat16, top_k_items

    items, queries = _synthetic(n_items, n_queries)
    alignment_figures(items, _head(queries, 64), k=k, min_items=50, min_queries=30)  # warm-up: kernels, allocator
    with PeakMemory() as memory:
        started = time.perf_counter()
        figures = alignment_figures(items, queries, k=k, min_items=50, min_queries=30)
        seconds = time.perf_counter() - started
    result = {"items": n_items, "seconds": seconds, "peak_above": memory.peak_above,
              "segments": len(figures.segments), "bfloat16": native_bfloat16()}
    if reference:
        started = time.perf_counter()
        screened = top_k_items(queries, items.vectors, k=k)
        result["top_k_s"] = time.perf_counter() - started
        started = time.perf_counter()
        previous = reference_top_k(queries, items.vectors, k=k)
        result["reference_s"] = time.perf_counter() - started
        result["agree"] = float(np.mean(np.all(np.sort(previous, axis=1) == np.sort(screened, axis=1), axis=1)))
    out.put(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()
    import os

    import torch

    context = multiprocessing.get_context("spawn")
    print(f"alignment report: {args.queries:,} queries, K={args.k}, {DIMENSION}-d, {N_CATEGORIES:,} categories, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    results = []
    sizes = sorted(args.sizes)
    for position, size in enumerate(sizes):
        queue: multiprocessing.Queue = context.Queue()
        child = context.Process(target=_one_size, args=(size, args.queries, args.k, position == len(sizes) - 1,
                                                        queue))
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
    ref = results[-1]
    screen = "bfloat16 screen" if ref["bfloat16"] else "float32 screen (no native bfloat16 here)"
    print(f"at {ref['items']:,} items: report {ref['seconds']:.2f} s, of which exact top-K ({screen}) "
          f"{ref['top_k_s']:.2f} s; reference float32 top-K per block {ref['reference_s']:.2f} s; top-K sets agree "
          f"on {ref['agree']:.4f} of the queries")
    at_target = ref["items"] == TARGET_ITEMS and args.queries == 10_000
    verdict = (f"measured {ref['seconds']:.2f} s: {'pass' if ref['seconds'] < TARGET_SECONDS else 'FAIL'}" if at_target
               else f"this run is not {TARGET_ITEMS:,} x 10,000")
    print(f"report / reference: {ref['seconds'] / ref['reference_s']:.2f} (target: the report under "
          f"{TARGET_SECONDS:.0f} s at {TARGET_ITEMS:,} items x 10,000 queries; {verdict})")


if __name__ == "__main__":
    main()
