"""Serving latency as a service sees it: in one long-lived process, the real path of ``towerctl recommend`` --
Feast ``get_online_features`` from the online store, then the query tower, then the search -- against the same parts
called alone, and the start-up cost of a fresh ``towerctl recommend`` process reported apart.

    .venv/bin/python ops/bench/recommend_latency.py [--home PATH] [--calls 300] [--k 10] [--starts 3]

Without ``--home`` a deployment is built first in a temporary home: the bundled MovieLens latest-small dataset
ingested, applied and materialized, a tiny model (15 steps) trained, exported, indexed into the embedded qdrant-edge
store and promoted (the model's quality does not matter here; the shapes do: 9,742 items, 610 users, the bundled
query features). ``--home PATH`` measures the deployment there (its SQLite registry, Feast state and edge vectors
under ``<home>/vectors``), building it first when ``PATH`` holds no registry yet, and keeps it.

Stages inside the retriever (``Retriever.recommend``): features = ``FeastFeatureStore.online_features`` (Feast's
online read of the query feature service with full feature names, keys and elapsed-time features converted), query
tower = rows -> tensors -> onnxruntime, search = the alias on the edge store without the user's recent items. The
parts alone: Feast's ``get_online_features(...).to_dict()``, onnxruntime's ``run`` on prepared tensors, the store's
``search``. The same users in the same order are measured both ways, interleaved, so both see the same load.
Printed: p50/p99 per stage, the standalone consumer (``examples/serve_with_onnxruntime.py``) on the same users, the
start-up times (interpreter, ``import feast``, ``towerctl --help``, ``towerctl recommend``) and

    retriever / sum of parts = X (target <= 1.2)

(total p50 inside the retriever over the sum of the parts' p50s: the glue the retriever adds to Feast, onnxruntime
and the search).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TINY = {"epochs": 1, "max_steps": 15, "embedding_dim": 16, "output_dim": 16, "hidden_dims": [32], "batch_size": 512}
LENIENT_GATES = "monitor:\n  min_coverage: 0.0\n  max_alignment_distance: 1000.0\n  max_recall_drop: 1.0\n"
# `towerctl` in this interpreter (the embedded edge store under $TOWER_HOME/vectors is the default backend)
CLI = "import sys; from tower_platform.cli.main import main; sys.argv[0] = 'towerctl'; main()"


def percentiles(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values)
    return float(np.percentile(array, 50)), float(np.percentile(array, 99))


def build_deployment(home: Path) -> None:
    """The main job on the bundled dataset with a tiny model, promoted, vectors in ``home/vectors`` (edge)."""
    from tower_platform.paths import bundled_config
    from tower_platform.pipeline.run import run_pipeline
    from tower_platform.registry.migration import upgrade_schema
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.settings import Settings
    from tower_platform.vectors.edge import EdgeVectorStore

    settings = Settings(home=home)
    settings.export_environment()
    lenient = home / "monitor-lenient.yaml"
    lenient.write_text(LENIENT_GATES)
    upgrade_schema(settings.registry_url)
    run_pipeline(
        bundled_config(), home_dir=settings.home_dir, repo_dir=settings.feature_repo_dir,
        artifacts_dir=settings.artifacts_dir, open_registry=lambda: SqlRegistryStore(settings.registry_url),
        open_vectors=lambda: EdgeVectorStore(home / "vectors"), training_overrides=TINY, refit=False, promote=True,
        monitor_config=lenient, actor="bench", reason="recommend_latency", progress=False,
        echo=lambda message: print(f"  {message}", file=sys.stderr),
    )


def wall_times(command: list[str], *, runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command[:3])} ... failed ({done.returncode}): {done.stderr[-2000:]}")
    return times


def start_up(home: Path, user: str, *, runs: int) -> list[tuple[str, list[float]]]:
    env = {**os.environ, "TOWER_HOME": str(home)}
    env.pop("TOWER_DATABASE_URL", None)
    towerctl = [sys.executable, "-c", CLI]
    return [
        ("python -c pass (interpreter)", wall_times([sys.executable, "-c", "pass"], runs=runs, env=env)),
        ("python -c 'import feast'", wall_times([sys.executable, "-c", "import feast"], runs=runs, env=env)),
        ("towerctl --help", wall_times([*towerctl, "--help"], runs=runs, env=env)),
        (f"towerctl recommend {user}", wall_times([*towerctl, "recommend", user, "--json"], runs=runs, env=env)),
    ]


def _example_module() -> Any:
    spec = importlib.util.spec_from_file_location("serve_with_onnxruntime", REPO / "examples" / "serve_with_onnxruntime.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def measure(home: Path, *, model: str, calls: int, k: int) -> dict[str, Any]:
    from tower_platform.features.store import FeastFeatureStore
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.serving.bundle import write_serving_bundle
    from tower_platform.serving.onnx_tower import OnnxTower
    from tower_platform.serving.retriever import OnlineQueryFeatures, Retriever
    from tower_platform.settings import Settings
    from tower_platform.vectors.edge import EdgeVectorStore

    settings = Settings(home=home)
    settings.export_environment()
    store = FeastFeatureStore(settings.feature_repo_dir, home_dir=settings.home_dir)
    with SqlRegistryStore(settings.registry_url) as registry, EdgeVectorStore(home / "vectors") as vectors:
        production = registry.production_version(model)
        if production is None:
            raise SystemExit(f"model '{model}' has no production version under {home}")
        artifact = production.artifact("query.onnx")
        tower = OnnxTower(artifact.path, expected_sha256=artifact.sha256, threads=1)
        contract = tower.metadata.serving
        features = OnlineQueryFeatures(store, service_name=contract.query_feature_service, user_key="user_id")
        retriever = Retriever(vectors, tower, features, model=model, expected_version=production.version)
        bundle = home / "bundle"
        write_serving_bundle(registry, vectors, store, model=model, out=bundle, force=True)
        n_items = vectors.collection_info(f"{model}__v{production.version}").point_count

        all_users = sorted(set(store.read_source("interactions").column("user_id").to_pylist()))
        users = [str(u) for u in np.random.default_rng(2).choice(all_users, size=calls)]
        service = store.feast.get_feature_service(contract.query_feature_service)
        for user in users[:20]:  # warm-up: Feast's registry cache, onnxruntime's first runs, the shard
            retriever.recommend(user, k=k)

        inside: dict[str, list[float]] = {"features": [], "query tower": [], "search": [], "total": []}
        alone: dict[str, list[float]] = {"features": [], "query tower": [], "search": []}
        for user in users:
            t = retriever.recommend(user, k=k).timings
            inside["features"].append(t.features_ms)
            inside["query tower"].append(t.query_tower_ms)
            inside["search"].append(t.search_ms)
            inside["total"].append(t.total_ms)

            t0 = time.perf_counter()
            raw = store.feast.get_online_features(features=service, entity_rows=[{"user_id": user}],
                                                  full_feature_names=True).to_dict()
            t1 = time.perf_counter()
            row = {name: values[0] for name, values in store.online_features(
                contract.query_feature_service, [{"user_id": user}]).items()}  # untimed: prepared inputs
            row.setdefault("user_id", user)
            feeds = tower.feeds({name: [row.get(name)] for name in tower.input_names})
            t2 = time.perf_counter()
            vector = tower.session.run(["embedding"], feeds)[0][0]  # onnxruntime alone, [D]
            t3 = time.perf_counter()
            vectors.search(model, vector, limit=k, exclude_item_ids=raw.get(contract.exclude_feature, [None])[0] or ())
            t4 = time.perf_counter()
            alone["features"].append((t1 - t0) * 1e3)
            alone["query tower"].append((t3 - t2) * 1e3)
            alone["search"].append((t4 - t3) * 1e3)

    example = _example_module()
    consumer = example.Recommender.from_bundle(bundle)
    try:
        for user in users[:20]:
            consumer.recommend(user, k=k)
        standalone = []
        for user in users:
            t0 = time.perf_counter()
            consumer.recommend(user, k=k)
            standalone.append((time.perf_counter() - t0) * 1e3)
    finally:
        consumer.close()
    return {"inside": inside, "alone": alone, "standalone": standalone, "users": users, "n_items": n_items,
            "version": production.version}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="a deployment to measure, built there when absent and kept "
                        "(default: build one in a temporary home)")
    parser.add_argument("--model", default="movies")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--starts", type=int, default=3, help="fresh processes per start-up measurement")
    args = parser.parse_args()

    temporary = args.home is None
    home = Path(tempfile.mkdtemp(prefix="tower-bench-")) if temporary else args.home.resolve()
    try:
        if temporary or not (home / "registry.db").is_file():
            home.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            print("building a deployment (bundled dataset, tiny model, edge vectors) ...", file=sys.stderr)
            build_deployment(home)
            print(f"  built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        result = measure(home, model=args.model, calls=args.calls, k=args.k)
        starts = start_up(home, result["users"][0], runs=args.starts)  # after the store is closed: no shard held
    finally:
        if temporary:
            shutil.rmtree(home, ignore_errors=True)

    inside, alone = result["inside"], result["alone"]
    print(f"model={args.model} v{result['version']} items={result['n_items']} vectors=qdrant-edge "
          f"online store=Feast sqlite calls={args.calls} k={args.k} (one long-lived process)")
    print(f"{'stage':<12} {'retriever p50':>14} {'p99':>9} {'alone p50':>11} {'p99':>9}   (ms)")
    for stage in ("features", "query tower", "search"):
        p50, p99 = percentiles(inside[stage])
        a50, a99 = percentiles(alone[stage])
        print(f"{stage:<12} {p50:>14.3f} {p99:>9.3f} {a50:>11.3f} {a99:>9.3f}")
    total50, total99 = percentiles(inside["total"])
    parts50 = sum(percentiles(alone[s])[0] for s in alone)
    print(f"{'total':<12} {total50:>14.3f} {total99:>9.3f} {parts50:>11.3f} {'':>9}   (alone: sum of p50s)")
    s50, s99 = percentiles(result["standalone"])
    print(f"standalone consumer (examples/serve_with_onnxruntime.py, same users): p50 {s50:.3f} ms  p99 {s99:.3f} ms")
    print(f"start-up of a fresh process (median of {args.starts}, min):")
    for label, times in starts:
        print(f"  {label:<34} {statistics.median(times):>7.2f} s  {min(times):>7.2f} s")
    print(f"retriever / sum of parts = {total50 / parts50:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
