"""Point-in-time join benchmark: Feast (this repo's offline store) against a pandas merge_asof reference.

An entity dataframe of N rows (default 1,000,000) is drawn with replacement from the bundled interactions; each row
asks for the query features (by user) and the item features (by item) as of its event minus 1 µs. The same rows go
through ``FeastFeatureStore.historical_features`` and through ``pandas.merge_asof`` per feature view (backward,
exact matches allowed, no TTL: the bundled config's TTLs are 0). Values must be identical; the script prints rows/s
of each, their ratio and the peak memory of each phase.

    .venv/bin/python ops/bench/pit_join.py [--rows 1000000] [--stock-rows 0]

``--stock-rows N`` also times Feast's stock DuckDB join (inner join + dedup) on N rows, for comparison.
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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.datasets import layout
from tower_platform.datasets import ingest, load_dataset_config
from tower_platform.features.store import ROW_ID, FeastFeatureStore
from tower_platform.paths import bundled_config, packaged_feature_repo

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
from peak_memory import PeakMemory  # noqa: E402

SERVICES = ((layout.QUERY_SERVICE, layout.USER_KEY, layout.QUERY_VIEWS), (layout.ITEM_SERVICE, layout.ITEM_KEY, layout.ITEM_VIEWS))


def entity_rows(interactions: pa.Table, *, rows: int, seed: int) -> pa.Table:
    pick = np.random.default_rng(seed).integers(0, interactions.num_rows, size=rows)  # (rows,)
    sample = interactions.take(pa.array(pick))
    as_of = pc.cast(sample.column("event_timestamp"), pa.int64()).to_numpy() - 1  # (rows,) event - 1 µs
    return pa.table(
        {
            ROW_ID: pa.array(np.arange(rows, dtype=np.int64)),
            layout.USER_KEY: sample.column(layout.USER_KEY),
            layout.ITEM_KEY: sample.column(layout.ITEM_KEY),
            layout.TIMESTAMP_FIELD: pa.array(as_of, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        }
    )


def feast_join(store: FeastFeatureStore, entity: pa.Table) -> dict[str, pa.Table]:
    out = {}
    for service, key, _ in SERVICES:
        out[service] = store.historical_features(entity.select([ROW_ID, key, layout.TIMESTAMP_FIELD]), service)
    return out


def reference_join(store: FeastFeatureStore, entity: pa.Table) -> dict[str, pa.Table]:
    """pandas.merge_asof per feature view, columns named like Feast's full feature names, sorted by row id."""
    views = store.source_schema()["views"]
    frame = entity.to_pandas().sort_values(layout.TIMESTAMP_FIELD, kind="stable")
    out = {}
    for service, key, view_names in SERVICES:
        joined = frame[[ROW_ID, key, layout.TIMESTAMP_FIELD]]
        for view in (v for v in view_names if v in views):
            features = [layout.SNAPSHOT_FIELD, *sorted(views[view]["fields"])]
            source = store.read_source(view).to_pandas()
            right = source[[key, layout.TIMESTAMP_FIELD, *features]].rename(
                columns={f: layout.full_name(view, f) for f in features}
            ).sort_values(layout.TIMESTAMP_FIELD, kind="stable")
            joined = pd.merge_asof(joined, right, on=layout.TIMESTAMP_FIELD, by=key, direction="backward", allow_exact_matches=True)
        out[service] = pa.Table.from_pandas(joined.sort_values(ROW_ID), preserve_index=False)
    return out


def compare(feast: dict[str, pa.Table], reference: dict[str, pa.Table]) -> list[str]:
    """Names of feature columns whose values differ (nulls, NaN and list contents compared exactly)."""
    differing = []
    for service, table in feast.items():
        expected = reference[service]
        for name in (c for c in table.column_names if "__" in c):
            got = table.column(name).combine_chunks()
            want = expected.column(name).combine_chunks()
            if pa.types.is_floating(got.type):
                want = pc.cast(want, got.type)
                same = np.array_equal(got.to_numpy(zero_copy_only=False), want.to_numpy(zero_copy_only=False), equal_nan=True)
            else:
                same = got.cast(want.type).equals(want) if got.type != want.type else got.equals(want)
            if not same:
                differing.append(f"{service}:{name}")
    return differing


def timed(label: str, run: Callable[[], Any], rows: int) -> tuple[Any, float, int]:
    with PeakMemory() as memory:
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
    print(f"{label:<34} {seconds:8.2f} s  {rows / seconds:12,.0f} rows/s  peak RSS {memory.peak / 2**20:8,.0f} MiB")
    return result, seconds, memory.peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stock-rows", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="tower-bench-"))
    try:
        ingest(load_dataset_config(bundled_config()), home_dir=home)
        store = FeastFeatureStore(packaged_feature_repo(), home_dir=home)
        store.apply()
        interactions = store.read_source(layout.INTERACTIONS)
        entity = entity_rows(interactions, rows=args.rows, seed=args.seed)
        feast_join(store, entity.slice(0, 1000))  # warm-up: imports, registry, DuckDB extension loading
        print(f"point-in-time join of {args.rows:,} entity rows (bundled interactions resampled), "
              f"{len(SERVICES)} feature services, {len(store.source_schema()['views'])} views")
        reference, ref_s, _ = timed("pandas merge_asof (reference)", lambda: reference_join(store, entity), args.rows)
        feast, feast_s, _ = timed("Feast get_historical_features", lambda: feast_join(store, entity), args.rows)
        differing = compare(feast, reference)
        print(f"values identical: {not differing}" + (f" (differ: {', '.join(differing)})" if differing else ""))
        print(f"ratio Feast / reference time: {feast_s / ref_s:.2f}x (target <= 5x)")
        if args.stock_rows:
            stock_repo = home / "stock_repo"
            shutil.copytree(packaged_feature_repo(), stock_repo, ignore=shutil.ignore_patterns("__pycache__"))
            yaml_path = stock_repo / "feature_store.yaml"
            yaml_path.write_text(yaml_path.read_text().replace("tower_platform.features.offline_store.AsofDuckDBOfflineStore", "duckdb"))
            stock = FeastFeatureStore(stock_repo, home_dir=home)
            small = entity.slice(0, args.stock_rows)
            timed(f"Feast stock DuckDB join, {args.stock_rows:,} rows", lambda: feast_join(stock, small), args.stock_rows)
            timed(f"Feast (ASOF store), {args.stock_rows:,} rows", lambda: feast_join(store, small), args.stock_rows)
        return 1 if differing else 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
