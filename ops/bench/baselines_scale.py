"""Classical baselines at retail size: every baseline, and ``towerctl evaluate --baselines``, within 4 GiB.

The retail generator of the tests (``tests/retail_dataset.py``, seeded: baskets of 2-20 purchases at one timestamp,
power-law article popularity, a tenth of the articles never bought, 2,000 sub classes, a price) writes a log of
30,000 customers x 25,000 articles x 800,000 purchases, and a reference log a quarter of that in every dimension.

1. Each baseline (MostPopular, MostPopular over the last 7 and 30 days, ItemKNN with 100 neighbours, EASE over its
   default 10,000 most interacted items) runs in its own process on the log read straight from the generated file:
   fit on train + validation, next-item evaluation of the test period. Seconds and peak resident memory per baseline,
   at both sizes; memory above the process's baseline (the log and its histories loaded) should grow no faster
   than the data.
2. ``towerctl data ingest``, ``features apply`` and ``features materialize``, then ``towerctl evaluate --baselines``
   (the point-in-time training set through Feast, then every baseline), each in its own process; the peak resident
   memory of ``evaluate`` is the bar (target < 4 GiB).

    .venv/bin/python ops/bench/baselines_scale.py                 # both parts, both sizes
    .venv/bin/python ops/bench/baselines_scale.py --no-cli        # part 1 only
    .venv/bin/python ops/bench/baselines_scale.py --keep /tmp/bs  # keep the generated data and TOWER_HOMEs

What the dense implementations would have needed at full size is printed beside (users x items and items x items
float64: about 11 GiB). Results: ``ops/bench/results/baselines_scale.txt`` (the printed lines).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
from peak_memory import PeakMemory  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "ops" / "bench" / "results" / "baselines_scale.txt"
FULL = {"users": 30_000, "items": 25_000, "interactions": 800_000}
CATEGORIES = 2_000
EASE_L2 = 200.0
TARGET_PEAK_GIB = 4.0
TOWERCTL = Path(sys.executable).with_name("towerctl")


def sizes(share: float) -> dict[str, int]:
    return {key: max(1, int(round(value * share))) for key, value in FULL.items()}


def generate(folder: Path, size: dict[str, int]) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from retail_dataset import write_retail_dataset

    return write_retail_dataset(folder, interactions=size["interactions"], users=size["users"], items=size["items"],
                                categories=min(CATEGORIES, size["items"]), seed=0)


def load_log(folder: Path) -> Any:
    """The generated purchases as an InteractionLog (epoch microseconds, the global 80% / 90% time split)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    from towers.evaluation import InteractionLog

    table = pacsv.read_csv(folder / "purchases.csv.gz", convert_options=pacsv.ConvertOptions(
        column_types={"purchased at": pa.timestamp("s", tz="UTC"), "customer id": pa.string(), "article": pa.string()}))
    users = pc.dictionary_encode(table["customer id"]).combine_chunks()
    items = pc.dictionary_encode(table["article"]).combine_chunks()
    micros = pc.cast(pc.cast(table["purchased at"], pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy()
    return InteractionLog.split_by_time(
        users.indices.to_numpy().astype(np.int64), item_codes=items.indices.to_numpy().astype(np.int64),
        timestamps=micros, n_users=len(users.dictionary), n_items=len(items.dictionary), ticks_per_second=1_000_000)


def baseline_names() -> list[str]:
    from towers.evaluation import classical_baselines

    return list(classical_baselines(ease_l2=EASE_L2))


def run_baseline(folder: Path, name: str) -> dict[str, Any]:
    """One baseline in this process: fit on train + validation, evaluate the test period; seconds and peak memory."""
    from towers.evaluation import InteractionHistory, classical_baselines, evaluate_next_item
    from towers.evaluation.baseline import fit_on_periods, next_item_scorer

    log = load_log(folder)
    history = InteractionHistory.build(log)
    model = classical_baselines(ease_l2=EASE_L2)[name]
    with PeakMemory() as memory:
        started = time.perf_counter()
        fit_on_periods(model, log, periods=("train", "validation"))
        fitted = time.perf_counter()
        report = evaluate_next_item(log, next_item_scorer(model, history=history), history=history)
        done = time.perf_counter()
    describe = getattr(model, "describe", None)
    return {"fit_s": fitted - started, "evaluate_s": done - fitted, "peak": memory.peak, "baseline": memory.baseline,
            "recall@100": report.metrics["recall@100"], "n_queries": report.n_queries, "n_fit_items": report.n_fit_items,
            "n_users": log.n_users, "n_items": log.n_items, "n_interactions": len(log),
            "note": describe() if callable(describe) else ""}


def child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cli(config: Path, home: Path) -> dict[str, Any]:
    """ingest, apply, materialize, then `towerctl evaluate --baselines` with its peak resident memory (process tree)."""
    env = {**os.environ, "TOWER_HOME": str(home)}
    for name in ("TOWER_DATABASE_URL", "TOWER_QDRANT__URL", "TOWER_FEATURE_REPO"):
        env.pop(name, None)
    stages: dict[str, Any] = {}
    commands = {
        "ingest": ["data", "ingest", "--config", str(config)],
        "apply": ["features", "apply"],
        "materialize": ["features", "materialize"],
        "evaluate": ["evaluate", "--config", str(config), "--baselines", "--ease-l2", f"{EASE_L2:g}", "--json"],
    }
    for stage, command in commands.items():
        started = time.perf_counter()
        process = subprocess.Popen([str(TOWERCTL), *command], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        with PeakMemory(process.pid) as memory:
            stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"towerctl {' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
        stages[stage] = {"seconds": time.perf_counter() - started, "peak": memory.peak}
        if stage == "evaluate":
            reports = json.loads(stdout)
            stages[stage]["recall@100"] = {name: r["metrics"]["recall@100"] for name, r in reports.items()}
            stages[stage]["notes"] = [line for line in stderr.splitlines() if line.startswith("EASE covers")]
    return stages


class Printer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference-share", type=float, default=0.25, help="reference size / full size")
    parser.add_argument("--no-cli", action="store_true", help="skip part 2 (Feast and towerctl evaluate)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the generated data and homes under this folder")
    parser.add_argument("--baseline", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline:
        print(json.dumps(run_baseline(args.folder, args.baseline)))
        return 0

    say = Printer()
    root = args.keep or Path(tempfile.mkdtemp(prefix="baselines-scale-"))
    runs = {"reference": sizes(args.reference_share), "full": sizes(1.0)}
    names = baseline_names()
    say(f"# ops/bench/baselines_scale.py, {time.strftime('%Y-%m-%d %H:%M')} (load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores)")
    results: dict[str, dict[str, Any]] = {}
    cli: dict[str, Any] = {}
    try:
        for label, size in runs.items():
            folder = root / label / "data"
            config = generate(folder, size)
            say(f"{label}: {size['users']:,} customers x {size['items']:,} articles x {size['interactions']:,} "
                f"purchases generated")
            results[label] = {}
            for name in names:
                r = child(["--baseline", name, "--folder", str(folder)])
                results[label][name] = r
                say(f"  {label:<9} {name:<27} fit {r['fit_s']:7.1f} s  evaluate {r['evaluate_s']:7.1f} s  peak "
                    f"{r['peak'] / 2**20:7,.0f} MiB (above baseline {(r['peak'] - r['baseline']) / 2**20:6,.0f} MiB)  "
                    f"R@100 {r['recall@100']:.3f}  {r['note']}")
            if not args.no_cli:
                cli[label] = run_cli(config, root / label / "home")
                for stage, r in cli[label].items():
                    say(f"  {label:<9} towerctl {stage:<12} {r['seconds']:7.1f} s  peak {r['peak'] / 2**20:7,.0f} MiB")
                for note in cli[label]["evaluate"]["notes"]:
                    say(f"  {label:<9} {note}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    full = results["full"][names[0]]
    say(f"full size: {full['n_users']:,} users x {full['n_items']:,} items, {full['n_interactions']:,} interactions, "
        f"{full['n_queries']:,} test queries over {full['n_fit_items']:,} fit items")
    dense = (full["n_users"] * full["n_fit_items"] + full["n_fit_items"] ** 2) * 8
    say(f"a dense users x items plus items x items float64 would need {dense / 2**30:.1f} GiB")
    data_ratio = 1.0 / args.reference_share
    worst = 0.0
    for name in names:
        ref, big = results["reference"][name], results["full"][name]
        growth = max(big["peak"] - big["baseline"], 1) / max(ref["peak"] - ref["baseline"], 2**20)
        worst = max(worst, big["peak"] / 2**30)
        say(f"{name:<27} time x{(big['fit_s'] + big['evaluate_s']) / (ref['fit_s'] + ref['evaluate_s']):5.1f}  memory "
            f"above baseline x{growth:5.2f} (target <= x{data_ratio:.0f}, the data's growth)  peak "
            f"{big['peak'] / 2**30:5.2f} GiB (target < {TARGET_PEAK_GIB:.0f} GiB)")
    say(f"largest baseline peak at full size: {worst:.2f} GiB (target < {TARGET_PEAK_GIB:.0f} GiB)")
    if cli:
        evaluate = cli["full"]["evaluate"]
        ratio = evaluate["peak"] / max(cli["reference"]["evaluate"]["peak"], 1)
        say(f"towerctl evaluate --baselines at full size: {evaluate['seconds']:.0f} s, peak "
            f"{evaluate['peak'] / 2**30:.2f} GiB (target < {TARGET_PEAK_GIB:.0f} GiB); x{ratio:.2f} the reference run's "
            f"peak (target <= x{data_ratio:.0f})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_name(f".{RESULTS.name}.tmp")
    tmp.write_text("\n".join(say.lines) + "\n", encoding="utf-8")
    os.replace(tmp, RESULTS)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
