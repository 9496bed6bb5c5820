"""Fit two towers on an Arrow training set (the entry point the platform pipeline calls).

    towers = fit_two_tower(train, corpus=items, schema=schema, config=TowerConfig())

Encoders are fitted on ``train``; the towers and their retrieval task are trained by the model-agnostic trainer,
with early stopping on a validation callback and per-epoch checkpoints that carry the config and the encoders.

Under data parallelism (``distributed``) every rank calls ``fit_two_tower`` with the same tables: each fits the same
encoders (checked by digest), the task gathers across ranks and the trainer trains the rank's share of each batch;
only rank 0's ``validation`` is called (``towers/training/distributed.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import torch

from towers.config import TowerConfig
from towers.errors import TowersInputError
from towers.features.encoder import FeatureEncoders
from towers.features.schema import ITEM_KEY, WEIGHT, FeatureSchema
from towers.tasks.gather import LOCAL
from towers.training.example import (
    as_tensors,
    example_weights,
    item_key_space,
    item_keys,
    require_columns,
    with_item_features,
)
from towers.training.trainable import TrainableTowers
from towers.training.trained import TrainedTowers
from towers.training.trainer import Trainer, seed_everything

if TYPE_CHECKING:  # pragma: no cover
    from towers.training.distributed import DataParallel

CHECKPOINT_NAME = "checkpoint.pt"


def fit_two_tower(
    train: pa.Table,
    *,
    corpus: pa.Table,
    schema: FeatureSchema,
    config: TowerConfig,
    validation: Callable[[TrainedTowers], float] | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    distributed: DataParallel | None = None,
) -> TrainedTowers:
    """Fit encoders on ``train``, train both towers, and return them (best validation epoch when ``validation`` is
    given: a callback returning e.g. Recall@K, higher is better). With ``checkpoint_dir`` the run writes
    ``checkpoint.pt`` after every epoch and resumes from it when it exists. With ``distributed`` this is one rank of
    a data-parallel run: every rank passes the same tables; ``validation`` is called on rank 0 only."""
    seed_everything(config.training.seed + (distributed.rank if distributed else 0))
    require_columns(train, [schema.user_id, schema.item_id], what="training")
    if train.num_rows < 2:
        raise TowersInputError(f"The training table has {train.num_rows} rows; in-batch negatives need at least 2.")
    train = with_item_features(train, corpus, schema=schema, config=config)
    encoders = FeatureEncoders.fit(train, schema=schema, config=config)
    if distributed is not None:
        digest = hashlib.sha256(json.dumps(encoders.to_dict(), sort_keys=True, default=str).encode()).hexdigest()
        distributed.require_same(digest, what="feature encoders (fitted on their training tables)")
    key_space = item_key_space(train, corpus, item_id=schema.item_id)
    arrays = {**encoders.encode(train, "query"), **encoders.encode(train, "item")}
    arrays[ITEM_KEY] = item_keys(train, key_space, item_id=schema.item_id)
    weights = example_weights(train)
    if weights is not None:
        arrays[WEIGHT] = weights
    trainable = TrainableTowers.build(config, encoders)
    if config.needs_corpus:
        corpus_arrays = encoders.encode(corpus, "item")
        trainable.attach_corpus(
            as_tensors(corpus_arrays), torch.from_numpy(item_keys(corpus, key_space, item_id=schema.item_id))
        )
    trained = TrainedTowers(model=trainable.model, task=trainable.task, encoders=encoders, config=config)

    def checkpoint_extra() -> dict[str, Any]:
        return {"config": config.to_dict(), "encoders": encoders.to_dict()}

    trainer = Trainer(
        trainable,
        as_tensors(arrays),
        dataclasses.replace(config.training, progress=progress and config.training.progress),
        validation=(lambda: validation(trained)) if validation is not None else None,
        checkpoint_path=Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None,
        checkpoint_extra=checkpoint_extra,
        distributed=distributed,
    )
    if distributed is not None:
        trainable.task.use_gather(distributed.gather)
    try:
        trained.history = trainer.run()
    finally:
        trainable.task.use_gather(LOCAL)
    trainable.eval()
    return trained
