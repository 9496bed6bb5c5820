"""Training throughput: the towers Trainer against a minimal hand-written loop over the same model and tensors.

Data: the bundled MovieLens latest-small (100k ratings, 9.7k movies) turned into a training table shaped like the
platform's (recent items, rating count, genres, year). Both loops run in this process, alternately, and the best of
``--repeats`` rounds is kept for each; the ratio Trainer / reference should be >= 0.9.

    .venv/bin/python ops/bench/train_throughput.py                       # CPU, batch 1024
    .venv/bin/python ops/bench/train_throughput.py --device cuda --batch-size 4096 --uniform-negatives 4096
"""

from __future__ import annotations

import argparse
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

BUNDLED = Path(__file__).resolve().parents[2] / "platform/tower_platform/bundled/movielens-latest-small"
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
    schema = movielens_schema(recent_len=recent_len)
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
    model.to(device).train()
    tensors = {n: t.to(device) for n, t in tensors.items()}
    optimizer = build_optimizer(model, config)
    n = next(iter(tensors.values())).shape[0]
    permutation = torch.randperm(n).to(device)
    per_epoch = n // config.batch_size
    use_autocast = device.type == "cuda" and config.autocast_bf16
    _sync(device)
    started = time.perf_counter()
    for step in range(steps):
        b = step % per_epoch
        index = permutation[b * config.batch_size : (b + 1) * config.batch_size]
        batch = {name: t.index_select(0, index) for name, t in tensors.items()}
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_autocast):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--uniform-negatives", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--progress", action="store_true", help="show the Trainer's progress bar while measuring")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tower_config = TowerConfig().with_overrides(
        {"batch_size": args.batch_size, "uniform_negatives": args.uniform_negatives, "device": args.device}
    )
    model, tensors = prepare(tower_config)
    config = TrainerConfig(
        batch_size=args.batch_size, device=args.device, progress=args.progress, learning_rate=tower_config.training.learning_rate
    )
    device = resolve_device(args.device)
    print(
        f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
        f"threads {torch.get_num_threads()}, examples {next(iter(tensors.values())).shape[0]:,}, "
        f"batch {args.batch_size}, uniform negatives {args.uniform_negatives}, "
        f"loss: corrected in-batch softmax{' + mixed negatives' if args.uniform_negatives else ''}, steps {args.steps}"
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


if __name__ == "__main__":
    main()
