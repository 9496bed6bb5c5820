"""Where the training time of the shipped configuration goes, on a dataset's real point-in-time training set.

The training set is built through the platform (ingest -> Feast apply + materialize -> point-in-time join, in a
temporary TOWER_HOME), so the towers see exactly the shipped schema (every query and item feature of the dataset
config). Rows, each measured with the same minimal loop (``train_throughput.reference_loop``) in this process, best of
``--repeats`` rounds, alternating:

    plain          the corrected in-batch softmax with the config's towers and encoders (no auxiliary parts)
    + <part>       plain plus one part of the shipped configuration (DAT + CAL, SENet, mixed negatives, SSL, ...)
    shipped        the dataset config's ``training:`` section as shipped

and the ratio shipped / plain (target >= 0.6). ``--variant 'NAME={"key": value}'`` adds a row of the shipped config
with those settings (an A/B in the same process). ``--profile`` adds a torch.profiler table of the shipped step.
``--clock cpu`` divides by the process's CPU time instead of wall time: on a shared, loaded machine (with
``--threads 1``) it shows what the rates would be with the core to itself, much less distorted by the load.

    .venv/bin/python ops/bench/train_profile.py                                  # bundled MovieLens latest-small
    .venv/bin/python ops/bench/train_profile.py --config platform/tower_platform/bundled/configs/movielens-100k.yaml \
        --source ../shared/datasets/movielens-100k --profile
    .venv/bin/python ops/bench/train_profile.py --variant 'bf16={"loss.softmax_matmul": "bfloat16"}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import reference_loop  # noqa: E402

# The parts of a configuration, as the TowerConfig keys that switch each on (their values come from the shipped
# config; a part the shipped config does not use is left out).
PARTS: dict[str, tuple[str, ...]] = {
    "DAT (+ CAL)": ("dat.",),
    "SENet": ("towers.senet",),
    "mixed negatives": ("loss.uniform_negatives",),
    "SSL": ("ssl.",),
    "sequence encoder": ("encoders.sequences",),
    "full-corpus softmax": ("loss.negatives", "loss.corpus_refresh_steps", "loss.corpus_gradient_negatives"),
    "queue": ("loss.queue_size",),
}


def cached_tables(config_path: Path, source: Path | None, cache: Path) -> tuple[Any, Any, Any, Any]:
    """``training_tables`` read from ``cache`` (train.parquet, corpus.parquet, schema.json) or built and written there."""
    import pyarrow.parquet as pq

    from tower_platform.datasets import load_dataset_config
    from towers.features import FeatureSchema

    dataset = load_dataset_config(config_path)
    files = [cache / "train.parquet", cache / "corpus.parquet", cache / "schema.json"]
    if not all(f.exists() for f in files):
        with tempfile.TemporaryDirectory(prefix="tower-train-profile-") as tmp:
            _, train, corpus, schema = training_tables(config_path, source, Path(tmp))
        cache.mkdir(parents=True, exist_ok=True)
        pq.write_table(train, files[0])
        pq.write_table(corpus, files[1])
        files[2].write_text(schema.to_json())
    return dataset, pq.read_table(files[0]), pq.read_table(files[1]), FeatureSchema.from_dict(
        json.loads(files[2].read_text()))


def training_tables(config_path: Path, source: Path | None, home: Path) -> tuple[Any, Any, Any, Any]:
    from tower_platform.datasets import ingest, load_dataset_config
    from tower_platform.features.materialization import apply_and_materialize
    from tower_platform.features.training_set import build_training_set
    from tower_platform.paths import packaged_feature_repo
    from tower_platform.pipeline.train import period_rows, split_times

    os.environ["TOWER_HOME"] = str(home)
    dataset = load_dataset_config(config_path)
    ingest(dataset, home_dir=home, source=source)
    store, _, _ = apply_and_materialize(repo_dir=packaged_feature_repo(), home_dir=home)
    training_set = build_training_set(store, dataset)
    validation_time, _ = split_times(training_set)
    return dataset, period_rows(training_set.table, ("train",)), store.item_corpus(validation_time), training_set.schema


def prepared(config: Any, train: Any, corpus: Any, schema: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """The trainable towers of ``config`` and the training tensors, as ``fit_two_tower`` builds them."""
    from towers.features import ITEM_KEY, FeatureEncoders
    from towers.training import TrainableTowers, item_key_space, item_keys, with_item_features
    from towers.training.example import as_tensors

    torch.manual_seed(0)
    rows = with_item_features(train, corpus, schema=schema, config=config)
    encoders = FeatureEncoders.fit(rows, schema=schema, config=config)
    space = item_key_space(rows, corpus, item_id=schema.item_id)
    arrays = {**encoders.encode(rows, "query"), **encoders.encode(rows, "item")}
    arrays[ITEM_KEY] = item_keys(rows, space, item_id=schema.item_id)
    model = TrainableTowers.build(config, encoders)
    if config.needs_corpus:
        model.attach_corpus(as_tensors(encoders.encode(corpus, "item")),
                            torch.from_numpy(item_keys(corpus, space, item_id=schema.item_id)))
    return model, as_tensors(arrays)


def configurations(shipped: Any) -> dict[str, Any]:
    """plain, plain + each part the shipped config uses, shipped."""
    from towers.config import TowerConfig, leaf_keys

    shipped_values = {key: _value(shipped, key) for key in leaf_keys()}
    default = TowerConfig()
    differing = {key: value for key, value in shipped_values.items() if value != _value(default, key)}
    part_keys = {key for prefixes in PARTS.values() for key in differing if key.startswith(prefixes)}
    common = {key: value for key, value in differing.items() if key not in part_keys}  # towers, encoders, training
    plain = default.with_overrides(common)
    rows = {"plain": plain}
    for part, prefixes in PARTS.items():
        keys = {key: value for key, value in differing.items() if key.startswith(prefixes)}
        if keys:
            rows[f"+ {part}"] = plain.with_overrides(keys)
    rows["shipped"] = shipped
    return rows


def _value(config: Any, key: str) -> Any:
    section, name = key.split(".", 1)
    value = getattr(getattr(config, section), name)
    if key == "encoders.sequences":
        return {n: vars(c) for n, c in value}
    return list(value) if isinstance(value, tuple) else value


def timed_loop(model: Any, tensors: dict[str, torch.Tensor], config: Any, *, steps: int, clock: str) -> float:
    """examples/s of the minimal loop, by wall time (``train_throughput.reference_loop``) or by process CPU time."""
    if clock == "wall":
        return reference_loop(model, tensors, config, steps=steps)
    import time

    started = time.process_time()
    reference_loop(model, tensors, config, steps=steps)
    return steps * config.batch_size / (time.process_time() - started)


def profile_table(model: Any, tensors: dict[str, torch.Tensor], config: Any, *, steps: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    reference_loop(model, tensors, config, steps=2)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        reference_loop(model, tensors, config, steps=steps)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)


def main() -> None:
    from tower_platform.paths import bundled_config
    from tower_platform.pipeline.config import tower_config_from
    from towers.config import TrainerConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=bundled_config())
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="a torch.profiler table of the shipped configuration")
    parser.add_argument("--set", action="append", default=[], help="override KEY=VALUE of the shipped config")
    parser.add_argument("--variant", action="append", default=[],
                        help='NAME={"dotted.key": value, ...}: a further row, the shipped config with these settings')
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="examples per second of wall time, or of this process's CPU time")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the built training set in this folder and reuse it on later runs")
    args = parser.parse_args()
    import yaml

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cache is not None:
        dataset, train, corpus, schema = cached_tables(args.config, args.source, args.cache)
    else:
        with tempfile.TemporaryDirectory(prefix="tower-train-profile-") as tmp:
            dataset, train, corpus, schema = training_tables(args.config, args.source, Path(tmp))
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    shipped = tower_config_from(dataset, overrides={**overrides, "training.device": "cpu"})
    rows = configurations(shipped)
    for variant in args.variant:
        name, _, settings = variant.partition("=")
        try:
            rows[f"shipped, {name}"] = shipped.with_overrides(json.loads(settings))
        except json.JSONDecodeError as error:
            parser.error(f"--variant {variant!r}: the settings after '=' must be a JSON object ({error})")
    print(f"{dataset.name}: {train.num_rows:,} training rows, {corpus.num_rows:,} corpus items, "
          f"{len(schema.query)} query and {len(schema.item)} item features; threads {torch.get_num_threads()}, "
          f"batch {shipped.training.batch_size}, steps {args.steps}, best of {args.repeats}, {args.clock} clock")
    prepared_rows = {name: prepared(config, train, corpus, schema) for name, config in rows.items()}
    trainer = TrainerConfig(batch_size=shipped.training.batch_size, device="cpu", progress=False,
                            learning_rate=shipped.training.learning_rate)
    trainers = {name: dataclasses.replace(trainer, cpu_autocast=config.training.cpu_autocast)
                for name, config in rows.items()}  # each row's own precision
    rates: dict[str, list[float]] = {name: [] for name in rows}
    for name, (model, tensors) in prepared_rows.items():
        reference_loop(model, tensors, trainers[name], steps=2)  # warm-up
    for _ in range(args.repeats):
        for name, (model, tensors) in prepared_rows.items():
            rates[name].append(timed_loop(model, tensors, trainers[name], steps=args.steps, clock=args.clock))
    plain = max(rates["plain"])
    for name, values in rates.items():
        best = max(values)
        print(f"{name:28s} {best:10,.0f} examples/s   {best / plain:6.3f} of plain   "
              f"(rounds: {', '.join(f'{v:,.0f}' for v in values)})")
    print(f"ratio shipped / plain = {max(rates['shipped']) / plain:.3f}   (target >= 0.6)")
    for name in rows:
        if name.startswith("shipped, "):
            print(f"ratio {name} / shipped = {max(rates[name]) / max(rates['shipped']):.3f}")
    if args.profile:
        model, tensors = prepared_rows["shipped"]
        print(profile_table(model, tensors, trainers["shipped"], steps=args.steps))


if __name__ == "__main__":
    main()
