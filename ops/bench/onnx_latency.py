"""Query-tower latency: the exported ``query.onnx`` of the SHIPPED configuration in onnxruntime against the same
torch tower in eager mode.

The tower is the one a dataset config ships (its ``training:`` section: sequence encoder, DAT, SENet, ...), built
on that dataset's real point-in-time training set (ingest -> Feast -> point-in-time join, ``train_profile.py``), its
encoders fitted there, and exported with the parity check of the platform's export. Batch 1 (p50/p99 over many
single rows) and batch 1024 (rows/s), both in this process with the same thread count. onnxruntime takes the
strings as served (vocabulary lookup inside the graph); torch eager gets ids already encoded, which favours torch.
Target: onnxruntime >= 3x faster at batch 1.

    .venv/bin/python ops/bench/onnx_latency.py [--threads 1] [--iterations 500] [--cache /tmp/tower-bundled]
    .venv/bin/python ops/bench/onnx_latency.py --config platform/tower_platform/bundled/configs/movielens-100k.yaml \
        --source ../shared/datasets/movielens-100k
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_profile import cached_tables, training_tables  # noqa: E402

from towers.features import FeatureEncoders  # noqa: E402
from towers.nn import TwoTowerModel  # noqa: E402
from towers.onnx import FORMAT_VERSION, export_tower, load_onnx_tower, table_to_onnx_inputs  # noqa: E402
from towers.training import with_item_features  # noqa: E402


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    from tower_platform.paths import bundled_config
    from tower_platform.pipeline.config import tower_config_from

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=bundled_config())
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=None, help="reuse the training set built in this folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--large-batch", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    if args.cache is not None:
        dataset, train, corpus, schema = cached_tables(args.config, args.source, args.cache)
    else:
        with tempfile.TemporaryDirectory(prefix="tower-onnx-latency-") as tmp:
            dataset, train, corpus, schema = training_tables(args.config, args.source, Path(tmp))
    config = tower_config_from(dataset, overrides={"training.device": "cpu"})
    train = with_item_features(train, corpus, schema=schema, config=config)
    encoders = FeatureEncoders.fit(train, schema=schema, config=config)
    torch.manual_seed(0)
    model = TwoTowerModel(config, encoders).eval()
    specs = encoders.specs["query"]
    rows = train.take(np.random.default_rng(0).choice(train.num_rows, args.large_batch, replace=False))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "query.onnx"
        metadata = {"format_version": FORMAT_VERSION, "model_name": "bench", "model_version": "1", "tower": "query",
                    "dimension": str(config.towers.output_dim)}
        _, diff = export_tower(model.query_tower, specs=specs, encoders=encoders, path=path, metadata=metadata, sample=rows)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        load_onnx_tower(path)  # the checked loader opens it too
    feeds = table_to_onnx_inputs(rows, specs)
    tensors = {n: torch.from_numpy(a) for n, a in encoders.encode(rows, "query").items()}
    tower = model.query_tower
    n = args.large_batch

    def ort_run(lo: int, hi: int) -> None:
        session.run(["embedding"], {k: v[lo:hi] for k, v in feeds.items()})

    def torch_run(lo: int, hi: int) -> None:
        with torch.inference_mode():
            tower({k: v[lo:hi] for k, v in tensors.items()})

    results: dict[str, dict[str, float]] = {}
    for name, run in (("onnxruntime", ort_run), ("torch eager", torch_run)):
        for i in range(50):  # warm-up
            run(i % n, i % n + 1)
        single: list[float] = []
        for i in range(args.iterations):
            started = time.perf_counter()
            run(i % n, i % n + 1)
            single.append(time.perf_counter() - started)
        run(0, n)
        started = time.perf_counter()
        repeats = 10
        for _ in range(repeats):
            run(0, n)
        rate = repeats * n / (time.perf_counter() - started)
        p50, p99 = _percentiles(single)
        results[name] = {"p50": p50, "p99": p99, "rate": rate}

    parts = [name for name, on in (("sequence encoder", bool(config.encoders.sequences)), ("DAT", config.dat.enabled),
                                    ("SENet", config.towers.senet)) if on]
    print(
        f"{dataset.name} shipped query tower ({', '.join(parts) or 'plain'}): {len(specs)} inputs "
        f"({', '.join(s.name for s in specs)}), D={config.towers.output_dim}, threads {args.threads}, "
        f"parity max abs diff {diff:.2e}"
    )
    for name, r in results.items():
        print(f"{name:12s} batch 1: p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms   batch {n}: {r['rate']:,.0f} rows/s")
    o, t = results["onnxruntime"], results["torch eager"]
    print(
        f"ratio torch/onnxruntime batch-1 p50 = {t['p50'] / o['p50']:.2f}x (target >= 3x), "
        f"p99 = {t['p99'] / o['p99']:.2f}x; onnxruntime/torch batch-{n} rows/s = {o['rate'] / t['rate']:.2f}x"
    )


if __name__ == "__main__":
    main()
