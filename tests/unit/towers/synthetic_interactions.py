"""Small synthetic training tables shaped like the platform's (for the towers tests)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest
import torch

from towers.config import TowerConfig
from towers.features.encoder import FeatureEncoders
from towers.features.schema import ITEM_KEY, FeatureSchema, FeatureSpec
from towers.training import TrainableTowers, item_key_space, item_keys, with_item_features

GENRES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]
RECENT = "user_history__recent_items"
N_RATINGS = "user_history__n_ratings"
TOP_GENRE = "user_profile__top_genre"
ITEM_GENRES = "movie__genres"
ITEM_YEAR = "movie__year"


@pytest.fixture(autouse=True)
def single_threaded_torch() -> Iterator[None]:
    """Tiny tensors run fastest on one thread (and the test machine's cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _string_lists(codes: np.ndarray, *, valid: np.ndarray, prefix: str | None = None) -> pa.ListArray:
    """codes [N, L] with a validity mask [N, L] -> list<string> [N] (GENRES names, or prefix + code)."""
    flat = codes[valid.astype(bool)]
    values = np.char.add(prefix, flat.astype(str)) if prefix is not None else np.array(GENRES)[flat]
    offsets = np.concatenate([[0], np.cumsum(valid.astype(bool).sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.string()))


def feature_schema(*, recent_len: int = 8) -> FeatureSchema:
    return FeatureSchema(
        query=(
            FeatureSpec(RECENT, "query", "multi_categorical", vocab_group="item_id", max_len=recent_len),
            FeatureSpec(N_RATINGS, "query", "numeric"),
            FeatureSpec(TOP_GENRE, "query", "categorical", vocab_group="genre"),
        ),
        item=(
            FeatureSpec(ITEM_GENRES, "item", "multi_categorical", vocab_group="genre", max_len=3),
            FeatureSpec(ITEM_YEAR, "item", "numeric"),
        ),
        item_category=ITEM_GENRES,
    )


def corpus_table(*, n_items: int = 300, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    item_ids = np.char.add("i", np.arange(n_items).astype(str))
    first = np.arange(n_items) % len(GENRES)
    second = rng.integers(0, len(GENRES), n_items)
    single = (first == second) | (np.arange(n_items) % 4 == 0)
    genres = _string_lists(np.stack([first, second], axis=1), valid=np.stack([np.ones_like(single), ~single], axis=1))
    year = rng.normal(1995, 10, n_items)
    year[rng.random(n_items) < 0.1] = np.nan
    return pa.table(
        {
            "item_id": pa.array(item_ids, type=pa.string()),
            ITEM_GENRES: genres,
            ITEM_YEAR: pa.array(year, type=pa.float64(), from_pandas=True),
        }
    )


def training_table(
    *, n_users: int = 200, n_items: int = 300, per_user: int = 15, recent_len: int = 8, seed: int = 0
) -> pa.Table:
    """Each user mostly picks items of a favourite genre; the recent-items list holds the user's earlier picks."""
    rng = np.random.default_rng(seed)
    favourite = rng.integers(0, len(GENRES), n_users)  # [U]
    users = np.repeat(np.arange(n_users), per_user)  # [N]
    genre_of_item = np.arange(n_items) % len(GENRES)
    items_by_genre = [np.flatnonzero(genre_of_item == g) for g in range(len(GENRES))]
    popularity = rng.zipf(1.6, n_items).astype(float)
    picks = np.empty(len(users), dtype=np.int64)
    for g in range(len(GENRES)):  # vectorised per genre: a handful of iterations, not per row
        rows = np.flatnonzero(favourite[users] == g)
        pool = items_by_genre[g]
        weight = popularity[pool] / popularity[pool].sum()
        picks[rows] = rng.choice(pool, size=len(rows), p=weight)
    noise = rng.random(len(users)) < 0.15
    picks[noise] = rng.integers(0, n_items, int(noise.sum()))
    position = np.tile(np.arange(per_user), n_users)  # [N]
    # recent items: the user's previous picks, most recent first, at most recent_len
    lags = np.arange(1, recent_len + 1)
    source = np.arange(len(users))[:, None] - lags[None, :]  # [N, L]
    valid = lags[None, :] <= position[:, None]
    ids = np.where(valid, picks[np.clip(source, 0, None)], -1)
    recent = _string_lists(ids, valid=valid, prefix="i")
    n_ratings = position.astype(float)
    n_ratings[rng.random(len(users)) < 0.1] = np.nan
    top = np.array(GENRES, dtype=object)[favourite[users]]
    top[rng.random(len(users)) < 0.1] = None
    return pa.table(
        {
            "row_id": pa.array(np.arange(len(users)), type=pa.int64()),
            "user_id": pa.array(np.char.add("u", users.astype(str)), type=pa.string()),
            "item_id": pa.array(np.char.add("i", picks.astype(str)), type=pa.string()),
            RECENT: recent,
            N_RATINGS: pa.array(n_ratings, type=pa.float64(), from_pandas=True),
            TOP_GENRE: pa.array(top, type=pa.string()),
        }
    )


def trainable_towers(
    config: TowerConfig, *, schema: FeatureSchema | None = None
) -> tuple[TrainableTowers, dict[str, torch.Tensor]]:
    """Towers and task of ``config`` over a small synthetic log, with the corpus attached, and one batch of it
    (``schema``: another schema of the same columns, e.g. without the item category)."""
    schema, corpus = schema or feature_schema(), corpus_table()
    train = with_item_features(training_table(n_users=20, per_user=5), corpus, schema=schema, config=config)
    encoders = FeatureEncoders.fit(train, schema=schema, config=config)
    torch.manual_seed(0)
    model = TrainableTowers.build(config, encoders)
    space = item_key_space(train, corpus, item_id="item_id")
    features = {n: torch.from_numpy(a) for n, a in encoders.encode(corpus, "item").items()}
    model.attach_corpus(features, torch.from_numpy(item_keys(corpus, space, item_id="item_id")))
    arrays = {**encoders.encode(train, "query"), **encoders.encode(train, "item")}
    batch = {n: torch.from_numpy(a) for n, a in arrays.items()}
    batch[ITEM_KEY] = torch.from_numpy(item_keys(train, space, item_id="item_id"))
    return model, batch
