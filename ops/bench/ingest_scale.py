"""Ingestion at scale: a synthetic retail log through ingest, feast apply, materialize and the point-in-time build.

The retail generator of the tests (``tests/retail_dataset.py``: baskets of 2-20 purchases at one timestamp, a price,
ids with spaces and non-ASCII characters, customers with age band and area) writes N interactions over 50,000
customers, 100,000 articles and 2,000 sub classes. Each stage runs in its own process, so that its peak resident
memory is its own; the script prints seconds and peak RSS per stage at the reference size (100,000 interactions) and
at the full size (1,000,000), and the growth of each from one to the other against the growth of the data.

    .venv/bin/python ops/bench/ingest_scale.py [--sizes 100000 1000000] [--keep DIR]

Targets: every stage's peak under 4 GiB at 1,000,000 interactions, and peak memory above the interpreter's baseline
growing no faster than the data (ratio <= the data ratio).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
from peak_memory import PeakMemory  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
STAGES = ("generate", "ingest", "apply", "materialize", "pit_build")
USERS, ITEMS, CATEGORIES = 50_000, 100_000, 2_000
TARGET_PEAK_GIB = 4.0


def run_stage(stage: str, folder: Path, interactions: int) -> dict[str, float]:
    """One stage in this process; returns seconds, peak RSS and the RSS before the stage (after imports)."""
    sys.path.insert(0, str(REPO / "tests"))
    from retail_dataset import write_retail_dataset

    from tower_platform.datasets import ingest, load_dataset_config
    from tower_platform.features.materialization import materialize
    from tower_platform.features.store import FeastFeatureStore
    from tower_platform.paths import packaged_feature_repo
    from tower_platform.features.training_set import build_training_set

    config_path, home = folder / "data" / "retail.yaml", folder / "home"
    store = FeastFeatureStore(packaged_feature_repo(), home_dir=home)
    actions = {
        "generate": lambda: write_retail_dataset(folder / "data", interactions=interactions, users=USERS, items=ITEMS,
                                                 categories=CATEGORIES),
        "ingest": lambda: ingest(load_dataset_config(config_path), home_dir=home),
        "apply": store.apply,
        "materialize": lambda: materialize(store),
        "pit_build": lambda: build_training_set(store, load_dataset_config(config_path)).table.num_rows,
    }
    if stage != "generate":
        import feast  # noqa: F401  the baseline includes the libraries every stage but generate loads
    with PeakMemory() as memory:
        start = time.perf_counter()
        actions[stage]()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak": memory.peak, "baseline": memory.baseline}


def measure(interactions: int, folder: Path) -> dict[str, dict[str, float]]:
    results = {}
    for stage in STAGES:
        out = subprocess.run(
            [sys.executable, __file__, "--stage", stage, "--folder", str(folder), "--interactions", str(interactions)],
            check=True, capture_output=True, text=True,
        )
        results[stage] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[stage]
        print(f"{interactions:>9,} interactions  {stage:<12} {r['seconds']:8.2f} s  peak RSS {r['peak'] / 2**20:8,.0f} MiB"
              f"  (above baseline {(r['peak'] - r['baseline']) / 2**20:8,.0f} MiB)", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[100_000, 1_000_000], help="reference and full size")
    parser.add_argument("--keep", type=Path, default=None, help="keep the generated data and homes under this folder")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--interactions", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.folder, args.interactions)))
        return 0

    root = args.keep or Path(tempfile.mkdtemp(prefix="ingest-scale-"))
    small, full = args.sizes
    print(f"retail log: {USERS:,} customers, {ITEMS:,} articles, {CATEGORIES:,} sub classes; sizes {small:,} and {full:,}")
    try:
        reference = measure(small, root / f"n{small}")
        measured = measure(full, root / f"n{full}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    data_ratio = full / small
    worst = 0.0
    for stage in STAGES:
        ref, big = reference[stage], measured[stage]
        growth = max(big["peak"] - big["baseline"], 1) / max(ref["peak"] - ref["baseline"], 2**20)
        worst = max(worst, big["peak"] / 2**30)
        print(f"{stage:<12} time x{big['seconds'] / ref['seconds']:6.1f}  memory above baseline x{growth:6.2f} "
              f"(target <= x{data_ratio:.0f}, the data's growth)  peak {big['peak'] / 2**30:5.2f} GiB "
              f"(target < {TARGET_PEAK_GIB:.0f} GiB)")
    print(f"largest stage peak at {full:,} interactions: {worst:.2f} GiB (target < {TARGET_PEAK_GIB:.0f} GiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
