"""The facade the platform pipeline calls: fit two towers on an Arrow training set, embed, export, save and load.

    towers = fit_two_tower(train, corpus=items, schema=schema, config=TowerConfig())
    queries = towers.embed_queries(test_rows)          # float32 [N, D], L2-normalised
    vectors = towers.embed_items(items)                # float32 [M, D]
    result = towers.export(out_dir, model_name="movies", model_version=3, feature_service="movies_v1", sample=rows)

The training table has one row per interaction: the id columns, the query features, and the item features (taken from
``corpus`` by item id when the training table does not carry them); an optional ``weight`` column holds the reward
r_i of each example.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from towers.config import TowerConfig
from towers.encoders import FeatureEncoders, input_specs
from towers.export import ExportResult, export_two_towers
from towers.model import ITEM_KEY, WEIGHT, TwoTowerModel
from towers.schema import FeatureSchema
from towers.trainer import Trainer, TrainerConfig, TrainingHistory, resolve_device, seed_everything

WEIGHT_COLUMN = "weight"
SAVE_FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"

__all__ = ["ExportResult", "TrainedTowers", "fit_two_tower", "trainer_config"]


def trainer_config(config: TowerConfig, *, progress: bool = True) -> TrainerConfig:
    return TrainerConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        optimizer=config.optimizer,
        weight_decay=config.weight_decay,
        grad_clip=config.grad_clip,
        seed=config.seed,
        device=config.device,
        patience=config.patience,
        max_steps=config.max_steps,
        progress=progress,
    )


def _require_columns(table: pa.Table, names: list[str], *, what: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise KeyError(f"the {what} table lacks columns {missing}; add them (names follow the FeatureSchema)")


def with_item_features(train: pa.Table, corpus: pa.Table, *, schema: FeatureSchema, config: TowerConfig) -> pa.Table:
    """``train`` plus every item-tower input it lacks, looked up in ``corpus`` by item id (vectorised)."""
    wanted = [s.name for s in input_specs(schema, config)["item"] if s.name not in train.column_names]
    if not wanted:
        return train
    _require_columns(corpus, [schema.item_id, *wanted], what="corpus")
    index = pc.index_in(pc.cast(train.column(schema.item_id), pa.string()), pc.cast(corpus.column(schema.item_id), pa.string()))
    for name in wanted:
        train = train.append_column(name, corpus.column(name).take(index))
    return train


def item_key_space(train: pa.Table, corpus: pa.Table, *, item_id: str) -> pa.Array:
    """Distinct item ids of the corpus and the training set: the key space of accidental hits and the estimator."""
    ids = pa.concat_arrays(
        [pc.cast(t.column(item_id), pa.string()).combine_chunks() for t in (corpus, train)]
    )
    return pc.unique(ids)


def item_keys(table: pa.Table, key_space: pa.Array, *, item_id: str) -> np.ndarray:
    index = pc.index_in(pc.cast(table.column(item_id), pa.string()), value_set=key_space)
    return pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64)  # [N]


def example_weights(table: pa.Table) -> np.ndarray | None:
    if WEIGHT_COLUMN not in table.column_names:
        return None
    weights = pc.fill_null(pc.cast(table.column(WEIGHT_COLUMN), pa.float64()), 1.0).to_numpy(zero_copy_only=False)
    return np.where(np.isfinite(weights), weights, 1.0).astype(np.float32)  # [N]


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}


class TrainedTowers:
    """A trained two-tower model with its encoders and config."""

    def __init__(
        self,
        *,
        model: TwoTowerModel,
        encoders: FeatureEncoders,
        config: TowerConfig,
        history: TrainingHistory | None = None,
    ) -> None:
        self.model = model
        self.encoders = encoders
        self.config = config
        self.history = history

    @property
    def schema(self) -> FeatureSchema:
        return self.encoders.schema

    @property
    def dimension(self) -> int:
        return self.config.output_dim

    @property
    def temperature(self) -> float:
        return self.config.temperature

    def _embed(self, table: pa.Table, side: str, *, batch_size: int) -> np.ndarray:
        _require_columns(table, [s.name for s in self.encoders.specs[side]], what=f"{side}-side")
        tensors = _tensors(self.encoders.encode(table, side))
        tower = self.model.query_tower if side == "query" else self.model.item_tower
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = np.empty((table.num_rows, self.dimension), dtype=np.float32)  # [N, D]
        try:
            with torch.no_grad():
                for start in range(0, table.num_rows, batch_size):
                    batch = {n: t[start : start + batch_size].to(device) for n, t in tensors.items()}
                    out[start : start + batch_size] = tower(batch).float().cpu().numpy()
        finally:
            self.model.train(was_training)
        return out

    def embed_queries(self, table: pa.Table, *, batch_size: int = 8192) -> np.ndarray:
        """Query-tower embeddings float32 [N, D] of the rows of ``table`` (query feature columns)."""
        return self._embed(table, "query", batch_size=batch_size)

    def embed_items(self, table: pa.Table, *, batch_size: int = 8192) -> np.ndarray:
        """Item-tower embeddings float32 [N, D] of the rows of ``table`` (item id and item feature columns)."""
        return self._embed(table, "item", batch_size=batch_size)

    def estimator_state(self) -> dict[str, np.ndarray]:
        """The streaming frequency estimator's arrays (``np.savez`` them for the registry)."""
        return self.model.estimator.state_arrays()

    def save_estimator(self, path: Path) -> Path:
        """The estimator's arrays as a small .npz (written to a temporary name, then renamed)."""
        return self.model.estimator.save_npz(Path(path))

    def export(
        self,
        out_dir: Path,
        *,
        model_name: str,
        model_version: int | str,
        feature_service: str,
        sample: pa.Table,
        item_sample: pa.Table | None = None,
    ) -> ExportResult:
        """Write ``query.onnx`` and ``item.onnx`` to ``out_dir`` after a parity check on ``sample`` (rows with the
        inputs of both towers; ``item_sample`` supplies the item side when ``sample`` lacks its columns)."""
        return export_two_towers(
            self.model,
            self.encoders,
            Path(out_dir),
            model_name=model_name,
            model_version=str(model_version),
            feature_service=feature_service,
            temperature=self.temperature,
            query_sample=sample,
            item_sample=item_sample if item_sample is not None else sample,
        )

    def state(self) -> dict[str, Any]:
        return {
            "format": SAVE_FORMAT,
            "config": self.config.to_dict(),
            "encoders": self.encoders.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }

    def save(self, path: Path) -> Path:
        """Weights, config and encoders in one file (written to a temporary name, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path, *, device: str = "cpu") -> TrainedTowers:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if "extra" in state:  # a training checkpoint
            state = {**state["extra"], "model": state["model"], "format": SAVE_FORMAT}
        if state.get("format") != SAVE_FORMAT:
            raise ValueError(f"{path} has format {state.get('format')!r}, expected {SAVE_FORMAT}; retrain or re-save it")
        return cls.from_state(state, device=device)

    @classmethod
    def from_state(cls, state: dict[str, Any], *, device: str = "cpu") -> TrainedTowers:
        config = TowerConfig.from_dict(state["config"])
        encoders = FeatureEncoders.from_dict(state["encoders"])
        model = TwoTowerModel(config, encoders)
        model.load_state_dict(state["model"])
        model.to(resolve_device(device)).eval()
        return cls(model=model, encoders=encoders, config=config)


def fit_two_tower(
    train: pa.Table,
    *,
    corpus: pa.Table,
    schema: FeatureSchema,
    config: TowerConfig,
    validation: Callable[[TrainedTowers], float] | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> TrainedTowers:
    """Fit encoders on ``train``, train both towers, and return them (best validation epoch when ``validation`` is
    given: a callback returning e.g. Recall@K, higher is better). With ``checkpoint_dir`` the run writes
    ``checkpoint.pt`` after every epoch and resumes from it when it exists."""
    seed_everything(config.seed)
    _require_columns(train, [schema.user_id, schema.item_id], what="training")
    if train.num_rows < 2:
        raise ValueError(f"the training table has {train.num_rows} rows; in-batch negatives need at least 2")
    train = with_item_features(train, corpus, schema=schema, config=config)
    encoders = FeatureEncoders.fit(train, schema=schema, config=config)
    key_space = item_key_space(train, corpus, item_id=schema.item_id)
    arrays = {**encoders.encode(train, "query"), **encoders.encode(train, "item")}
    arrays[ITEM_KEY] = item_keys(train, key_space, item_id=schema.item_id)
    weights = example_weights(train)
    if weights is not None:
        arrays[WEIGHT] = weights
    model = TwoTowerModel(config, encoders)
    if config.needs_corpus:
        corpus_arrays = encoders.encode(corpus, "item")
        model.attach_corpus(
            _tensors(corpus_arrays), torch.from_numpy(item_keys(corpus, key_space, item_id=schema.item_id))
        )
    trained = TrainedTowers(model=model, encoders=encoders, config=config)

    def checkpoint_extra() -> dict[str, Any]:
        return {"config": config.to_dict(), "encoders": encoders.to_dict()}

    trainer = Trainer(
        model,
        _tensors(arrays),
        trainer_config(config, progress=progress),
        validation=(lambda: validation(trained)) if validation is not None else None,
        checkpoint_path=Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None,
        checkpoint_extra=checkpoint_extra,
    )
    trained.history = trainer.run()
    model.eval()
    return trained
