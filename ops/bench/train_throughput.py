"""Training throughput: the towers Trainer against a minimal hand-written loop, and the shipped configuration
against the plain corrected softmax, on the bundled data and on a synthetic retail-shaped log.

1. Trainer vs reference loop. Data: the bundled MovieLens latest-small (100k ratings, 9.7k movies) turned into a
   training table shaped like the platform's (recent items, rating count, genres, year). Both loops run in this
   process, alternately, and the best of ``--repeats`` rounds is kept for each; the ratio Trainer / reference should
   be >= 0.9.
2. Full vs plain (``--shapes``): the shipped configuration (the ``training:`` section of the bundled latest-small
   config: DAT + CAL, SSL, SENet, 256 uniform negatives) and the plain corrected in-batch softmax (the TowerConfig
   defaults), each through the reference loop on the same tensors, on the bundled shape and on a synthetic retail
   shape: the seeded generator of the tests (``tests/retail_dataset.py``: baskets of 2-20 articles at one
   timestamp, power-law popularity, a price) at about 650,000 purchases, 23,000 sold articles and 2,000 sub classes;
   query side: the last 10 articles, the sub classes of the last 3, the purchase count and the hours since the
   previous purchase; item side: sub class (the category), colours, price. The ratio full / plain should be >= 0.6.
   ``--profile`` prints the top of a torch.profiler table of the shipped configuration's steps on each shape.

In part 1, ``--loss full`` (the default on CUDA) is the full corrected loss: the sampling-bias-corrected in-batch softmax with
accidental hits removed, mixed negatives (``--uniform-negatives``, default: the batch size) and the SSL term (RFM,
weight 1, 256 items); ``--loss corrected`` (the default on CPU) the corrected softmax alone. The GPU target is
>= 250k examples/s with the full loss on one GPU.

    .venv/bin/python ops/bench/train_throughput.py                       # CPU, batch 1024, corrected softmax, both shapes
    .venv/bin/python ops/bench/train_throughput.py --shapes bundled --profile
    .venv/bin/python ops/bench/train_throughput.py --device cuda --batch-size 4096     # full loss, bf16 autocast
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import torch

from towers.config import TowerConfig, TrainerConfig
from towers.features import ITEM_KEY, FeatureEncoders, FeatureSchema, FeatureSpec
from towers.training import (
    TrainableTowers,
    Trainer,
    build_optimizer,
    item_key_space,
    item_keys,
    resolve_device,
    with_item_features,
)
from towers.training.allocator import retain_freed_memory
from towers.training.precision import autocast_device_type, autocast_enabled

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "platform/tower_platform/bundled/movielens-latest-small"
SHIPPED_CONFIG = REPO / "platform/tower_platform/bundled/configs/movielens-latest-small.yaml"
SHAPES = ("bundled", "retail")
RETAIL = {"interactions": 650_000, "users": 30_000, "items": 25_500, "categories": 2_000}  # ~23k articles sold
RETAIL_RECENT = 10
RECENT, N_RATINGS = "user_history__recent_items", "user_history__n_ratings"
GENRES, YEAR = "movie__genres", "movie__year"


def movielens_schema(*, recent_len: int = 20) -> FeatureSchema:
    return FeatureSchema(
        query=(
            FeatureSpec(RECENT, "query", "multi_categorical", vocab_group="item_id", max_len=recent_len),
            FeatureSpec(N_RATINGS, "query", "numeric"),
        ),
        item=(
            FeatureSpec(GENRES, "item", "multi_categorical", vocab_group="genre", max_len=6),
            FeatureSpec(YEAR, "item", "numeric"),
        ),
        item_category=GENRES,
    )


def movielens_tables(*, recent_len: int = 20, root: Path = BUNDLED) -> tuple[pa.Table, pa.Table]:
    """(training table, corpus) built column-wise from the bundled ratings.csv and movies.csv."""
    ratings = pacsv.read_csv(root / "ratings.csv")
    movies = pacsv.read_csv(root / "movies.csv")
    order = np.lexsort((ratings["timestamp"].to_numpy(), ratings["userId"].to_numpy()))
    ratings = ratings.take(pa.array(order))
    users = ratings["userId"].to_numpy()
    items = pc.cast(ratings["movieId"], pa.string()).to_numpy(zero_copy_only=False).astype(object)
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    lengths = np.diff(np.r_[starts, len(users)])
    position = np.arange(len(users)) - np.repeat(starts, lengths)  # [N] index within the user's history
    lags = np.arange(1, recent_len + 1)
    valid = lags[None, :] <= position[:, None]  # [N, L]: most recent first
    source = np.clip(np.arange(len(users))[:, None] - lags[None, :], 0, None)
    offsets = np.r_[0, np.cumsum(valid.sum(axis=1))].astype(np.int32)
    recent = pa.ListArray.from_arrays(pa.array(offsets), pa.array(items[source][valid], type=pa.string()))
    train = pa.table(
        {
            "user_id": pc.cast(ratings["userId"], pa.string()),
            "item_id": pa.array(items, type=pa.string()),
            RECENT: recent,
            N_RATINGS: pa.array(position.astype(np.float64)),
        }
    )
    year = pc.struct_field(pc.extract_regex(movies["title"], r"\((?P<year>\d{4})\)\s*$"), "year")
    corpus = pa.table(
        {
            "item_id": pc.cast(movies["movieId"], pa.string()),
            GENRES: pc.split_pattern(movies["genres"], "|"),
            YEAR: pc.cast(year, pa.float64()),
        }
    )
    return train, corpus


def prepare(config: TowerConfig, *, recent_len: int = 20) -> tuple[TrainableTowers, dict[str, torch.Tensor]]:
    train, corpus = movielens_tables(recent_len=recent_len)
    return prepare_tables(config, train, corpus, movielens_schema(recent_len=recent_len))


def prepare_tables(
    config: TowerConfig, train: pa.Table, corpus: pa.Table, schema: FeatureSchema
) -> tuple[TrainableTowers, dict[str, torch.Tensor]]:
    """Encoders, model (with the corpus when the config needs it) and the training tensors, as fit_two_tower does."""
    train = with_item_features(train, corpus, schema=schema, config=config)
    encoders = FeatureEncoders.fit(train, schema=schema, config=config)
    keys = item_key_space(train, corpus, item_id="item_id")
    arrays = {**encoders.encode(train, "query"), **encoders.encode(train, "item")}
    arrays[ITEM_KEY] = item_keys(train, keys, item_id="item_id")
    model = TrainableTowers.build(config, encoders)
    if config.needs_corpus:
        corpus_arrays = encoders.encode(corpus, "item")
        model.attach_corpus(
            {n: torch.from_numpy(a) for n, a in corpus_arrays.items()},
            torch.from_numpy(item_keys(corpus, keys, item_id="item_id")),
        )
    return model, {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in arrays.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_loop(model: TrainableTowers, tensors: dict[str, torch.Tensor], config: TrainerConfig, *, steps: int) -> float:
    """The minimal loop: shuffled index slices, forward, backward, clip, step. Returns examples/s."""
    device = resolve_device(config.device)
    if device.type == "cpu" and config.retain_freed_memory:
        retain_freed_memory()  # as the Trainer does (towers/training/allocator.py)
    model.to(device).train()
    tensors = {n: t.to(device) for n, t in tensors.items()}
    optimizer = build_optimizer(model, config)
    n = next(iter(tensors.values())).shape[0]
    permutation = torch.randperm(n).to(device)
    per_epoch = n // config.batch_size
    use_autocast = autocast_enabled(device, config)
    _sync(device)
    started = time.perf_counter()
    for step in range(steps):
        b = step % per_epoch
        index = permutation[b * config.batch_size : (b + 1) * config.batch_size]
        batch = {name: t.index_select(0, index) for name, t in tensors.items()}
        with torch.autocast(device_type=autocast_device_type(device), dtype=torch.bfloat16, enabled=use_autocast):
            loss, _ = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
    _sync(device)
    return steps * config.batch_size / (time.perf_counter() - started)


def trainer_run(model: TrainableTowers, tensors: dict[str, torch.Tensor], config: TrainerConfig, *, steps: int) -> float:
    device = resolve_device(config.device)
    trainer = Trainer(model, tensors, TrainerConfig(**{**config.__dict__, "max_steps": steps, "epochs": 10_000}))
    _sync(device)
    started = time.perf_counter()
    trainer.run()
    _sync(device)
    return trainer.step * config.batch_size / (time.perf_counter() - started)


def retail_schema() -> FeatureSchema:
    return FeatureSchema(
        query=(
            FeatureSpec(RETAIL_RECENT_ITEMS, "query", "multi_categorical", vocab_group="item_id", max_len=RETAIL_RECENT),
            FeatureSpec(RETAIL_RECENT_CLASSES, "query", "multi_categorical", vocab_group="sub_class", max_len=3),
            FeatureSpec(RETAIL_PURCHASES, "query", "numeric"),
            FeatureSpec(RETAIL_HOURS, "query", "numeric"),
        ),
        item=(
            FeatureSpec(RETAIL_SUB_CLASS, "item", "categorical", vocab_group="sub_class"),
            FeatureSpec(RETAIL_COLOURS, "item", "multi_categorical", max_len=3),
            FeatureSpec(RETAIL_PRICE, "item", "numeric"),
        ),
        item_category=RETAIL_SUB_CLASS,
    )


RETAIL_RECENT_ITEMS, RETAIL_RECENT_CLASSES = "user_history__recent_items", "user_history__recent_sub_classes"
RETAIL_PURCHASES, RETAIL_HOURS = "user_history__n_purchases", "user_history__hours_since_previous"
RETAIL_SUB_CLASS, RETAIL_COLOURS, RETAIL_PRICE = "item_profile__sub_class", "item_profile__colours", "item_profile__price"


def lagged_lists(values: np.ndarray, position: np.ndarray, length: int) -> pa.ListArray:
    """Per row (rows sorted by user, then time): the values of the user's previous ``length`` rows, latest first."""
    lags = np.arange(1, length + 1)
    valid = lags[None, :] <= position[:, None]  # [N, L]
    source = np.clip(np.arange(len(position))[:, None] - lags[None, :], 0, None)
    offsets = np.r_[0, np.cumsum(valid.sum(axis=1))].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[source][valid], type=pa.string()))


def retail_tables(size: dict[str, int] = RETAIL, *, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """(training table, corpus) of the tests' seeded retail generator, built column-wise (no feature store)."""
    sys.path.insert(0, str(REPO / "tests"))
    from retail_dataset import write_retail_dataset

    with tempfile.TemporaryDirectory(prefix="throughput-retail-") as tmp:
        folder = Path(tmp)
        write_retail_dataset(folder, interactions=size["interactions"], users=size["users"], items=size["items"],
                             categories=size["categories"], seed=seed)
        strings = {"customer id": pa.string(), "article": pa.string()}
        purchases = pacsv.read_csv(folder / "purchases.csv.gz", convert_options=pacsv.ConvertOptions(
            column_types={**strings, "purchased at": pa.timestamp("s", tz="UTC")}))
        articles = pacsv.read_csv(folder / "articles.csv", convert_options=pacsv.ConvertOptions(column_types=strings))
    seconds = pc.cast(pc.cast(purchases["purchased at"], pa.timestamp("s", tz="UTC")), pa.int64()).to_numpy()
    users = pc.dictionary_encode(purchases["customer id"]).combine_chunks().indices.to_numpy()
    order = np.lexsort((seconds, users))
    purchases, users, seconds = purchases.take(pa.array(order)), users[order], seconds[order]
    items = purchases["article"].to_numpy(zero_copy_only=False).astype(object)
    starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    position = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))  # [N]
    sub_class_of = dict(zip(articles["article"].to_pylist(), articles["sub class"].to_pylist(), strict=True))
    classes = np.asarray([sub_class_of[i] for i in items], dtype=object)
    hours = np.where(position > 0, (seconds - np.roll(seconds, 1)) / 3600.0, np.nan)
    train = pa.table({
        "user_id": purchases["customer id"],
        "item_id": pa.array(items, type=pa.string()),
        RETAIL_RECENT_ITEMS: lagged_lists(items, position, RETAIL_RECENT),
        RETAIL_RECENT_CLASSES: lagged_lists(classes, position, 3),
        RETAIL_PURCHASES: pa.array(position.astype(np.float64)),
        RETAIL_HOURS: pa.array(hours),
    })
    corpus = pa.table({
        "item_id": articles["article"],
        RETAIL_SUB_CLASS: articles["sub class"],
        RETAIL_COLOURS: pc.split_pattern(articles["colours"], "/"),
        RETAIL_PRICE: pc.log1p(pc.cast(articles["list price"], pa.float64())),
    })
    return train, corpus


def shipped_config(**overrides: object) -> TowerConfig:
    """The ``training:`` section of the bundled latest-small config (what quickstart trains)."""
    import yaml

    section = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8")).get("training") or {}
    return TowerConfig.from_dict(section).with_overrides(overrides)


def full_vs_plain(shape: str, args: argparse.Namespace) -> float:
    """Examples/s of the plain corrected softmax and of the shipped configuration on one data shape; returns the ratio."""
    tables = movielens_tables() + (movielens_schema(),) if shape == "bundled" else retail_tables() + (retail_schema(),)
    common = {"training.batch_size": args.batch_size, "training.device": args.device}
    configs = {"plain": TowerConfig().with_overrides(common), "full": shipped_config(**common)}
    prepared = {name: prepare_tables(config, *tables) for name, config in configs.items()}
    # both rows train at the shipped config's CPU precision (training.cpu_autocast), as a user of this machine would
    trainer_config = TrainerConfig(batch_size=args.batch_size, device=args.device, progress=False,
                                   cpu_autocast=configs["full"].training.cpu_autocast)
    n_items = tables[1].num_rows
    category = tables[1].column(tables[2].item_category)
    categories = len(pc.unique(pc.list_flatten(category) if pa.types.is_list(category.type) else category))
    print(f"{shape}: {tables[0].num_rows:,} examples, {n_items:,} items, {categories:,} categories; "
          f"full = {describe(configs['full'])}")
    rounds: dict[str, list[float]] = {name: [] for name in configs}
    for name, (model, tensors) in prepared.items():  # warm-up
        reference_loop(model, tensors, trainer_config, steps=max(3, args.steps // 4))
    for _ in range(args.repeats):
        for name, (model, tensors) in prepared.items():
            rounds[name].append(reference_loop(model, tensors, trainer_config, steps=args.steps))
    for name in configs:
        print(f"{shape}: {name:<6} {max(rounds[name]):12,.0f} examples/s   "
              f"(rounds: {', '.join(f'{r:,.0f}' for r in rounds[name])})")
    ratio = max(rounds["full"]) / max(rounds["plain"])
    print(f"{shape}: full / plain = {ratio:.3f} (target >= 0.6)")
    if args.profile:
        profile(*prepared["full"], trainer_config, steps=max(5, args.steps // 4), rows=args.profile_rows)
    return ratio


def describe(config: TowerConfig) -> str:
    parts = ["corrected softmax" if config.loss.sampling_bias_correction else "plain softmax"]
    if config.dat.enabled:
        parts.append(f"DAT{' + CAL' if config.dat.category_weight > 0 else ''}")
    if config.ssl.enabled:
        parts.append(f"SSL ({config.ssl.masking})")
    if config.towers.senet:
        parts.append("SENet")
    if config.loss.uniform_negatives:
        parts.append(f"{config.loss.uniform_negatives} uniform negatives")
    if config.loss.negatives == "full_corpus":
        parts.append("full-corpus softmax")
    if config.loss.softmax_matmul != "float32" or config.training.cpu_autocast != "off":
        parts.append(f"softmax matmuls {config.loss.softmax_matmul}, CPU autocast {config.training.cpu_autocast}")
    return " + ".join(parts)


def profile(model: TrainableTowers, tensors: dict[str, torch.Tensor], config: TrainerConfig, *, steps: int,
            rows: int) -> None:
    """The top of a torch.profiler table (self CPU time) over ``steps`` steps of the reference loop."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if resolve_device(config.device).type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        reference_loop(model, tensors, config, steps=steps)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("full vs plain", "the shipped configuration beside the plain corrected softmax")
    group.add_argument("--shapes", nargs="*", choices=SHAPES, default=list(SHAPES),
                       help="data shapes for full vs plain (default: both; none to skip)")
    group.add_argument("--profile", action="store_true", help="print a torch.profiler table of the shipped configuration")
    group.add_argument("--profile-rows", type=int, default=20, help="rows of the profiler table")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--uniform-negatives", type=int, default=None,
                        help="mixed negatives per batch (default: the batch size with --loss full, else 0)")
    parser.add_argument("--loss", choices=["corrected", "full"], default=None,
                        help="corrected softmax, or + mixed negatives + SSL (default: full on CUDA, corrected on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--progress", action="store_true", help="show the Trainer's progress bar while measuring")
    add_shape_arguments(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    loss = args.loss or ("full" if device.type == "cuda" else "corrected")
    uniform = args.uniform_negatives if args.uniform_negatives is not None else (args.batch_size if loss == "full" else 0)
    overrides = {"batch_size": args.batch_size, "uniform_negatives": uniform, "device": args.device}
    if loss == "full":
        overrides.update({"ssl.weight": 1.0, "ssl.sample_size": 256, "ssl.masking": "random"})
    tower_config = TowerConfig().with_overrides(overrides)
    model, tensors = prepare(tower_config)
    config = TrainerConfig(
        batch_size=args.batch_size, device=args.device, progress=args.progress, learning_rate=tower_config.training.learning_rate
    )
    print(
        f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
        f"threads {torch.get_num_threads()}, examples {next(iter(tensors.values())).shape[0]:,}, "
        f"batch {args.batch_size}, uniform negatives {uniform}, "
        f"loss: corrected in-batch softmax{' + mixed negatives' if uniform else ''}{' + SSL (RFM)' if loss == 'full' else ''}"
        f"{', bf16 autocast' if device.type == 'cuda' else ''}, steps {args.steps}"
    )
    reference_loop(model, tensors, config, steps=max(3, args.steps // 4))  # warm-up
    reference, trainer = [], []
    for _ in range(args.repeats):
        reference.append(reference_loop(model, tensors, config, steps=args.steps))
        trainer.append(trainer_run(model, tensors, config, steps=args.steps))
    best_ref, best_trainer = max(reference), max(trainer)
    print(f"reference loop  {best_ref:12,.0f} examples/s   (rounds: {', '.join(f'{r:,.0f}' for r in reference)})")
    print(f"Trainer         {best_trainer:12,.0f} examples/s   (rounds: {', '.join(f'{r:,.0f}' for r in trainer)})")
    print(f"ratio Trainer / reference = {best_trainer / best_ref:.3f}   (target >= 0.9)")
    for shape in args.shapes:
        full_vs_plain(shape, args)


if __name__ == "__main__":
    main()
