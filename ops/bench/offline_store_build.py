"""Training-set build time: the Spark offline store (``feature_repo/spark``) against the default DuckDB store.

The bundled dataset is ingested into a temporary home and applied once; then ``build_training_set`` runs on the
DuckDB store (the reference) and on the Spark store in ``local[*]`` mode, first with the Spark session's start-up
(cold) and then again on the running session (warm). The training sets must be identical (fingerprints compared).

    .venv/bin/python ops/bench/offline_store_build.py [--repeats 1]

Needs Java 17 and the ``spark`` extra (``pip install -e '.[spark]'``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tower_platform.datasets import ingest, load_dataset_config
from tower_platform.features.store import FeastFeatureStore
from tower_platform.paths import bundled_config, packaged_feature_repo
from tower_platform.features.training_set import build_training_set


def timed(label: str, run: Callable[[], Any], *, repeats: int) -> tuple[Any, float]:
    """The result of the last run and the best of ``repeats`` wall times."""
    best = float("inf")
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    print(f"{label:<44} {best:8.2f} s")
    return result, best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="warm runs per store (best time is printed)")
    args = parser.parse_args(argv)

    config = load_dataset_config(bundled_config())
    home = Path(tempfile.mkdtemp(prefix="tower-bench-"))
    try:
        ingest(config, home_dir=home)
        duckdb_store = FeastFeatureStore(packaged_feature_repo(), home_dir=home)
        duckdb_store.apply()
        spark_store = FeastFeatureStore(packaged_feature_repo() / "spark", home_dir=home)
        build_training_set(duckdb_store, config)  # warm-up: imports, registry, DuckDB extension loading
        print(f"training set of the bundled dataset ({config.name}), both feature services")
        reference, duckdb_s = timed("DuckDB (ASOF store, reference)", lambda: build_training_set(duckdb_store, config), repeats=args.repeats)
        _, cold_s = timed("Spark local[*], session start included", lambda: build_training_set(spark_store, config), repeats=1)
        spark, warm_s = timed("Spark local[*], running session", lambda: build_training_set(spark_store, config), repeats=args.repeats)
        same = spark.fingerprint == reference.fingerprint and spark.table.equals(reference.table)
        print(f"rows {reference.table.num_rows:,}; identical training sets: {same}")
        print(f"ratio Spark / DuckDB time: {warm_s / duckdb_s:.1f}x warm, {cold_s / duckdb_s:.1f}x cold "
              "(target: identical training sets; Spark pays for distribution on one machine)")
        return 0 if same else 1
    finally:
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
