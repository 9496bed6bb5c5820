"""A trained two-tower model with its encoders and config: embed, export, save and load.

    queries = towers.embed_queries(test_rows)          # float32 [N, D], L2-normalised
    vectors = towers.embed_items(items)                # float32 [M, D]
    result = towers.export(out_dir, model_name="movies", model_version=3, feature_service="movies_v1", sample=rows)

A saved file (``save``) or a training checkpoint (``towers/training/trainer.py``) carries the config and the encoders
that rebuild the model (``TowerConfig.from_dict``, ``FeatureEncoders.from_dict``), then the weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from towers.config import TowerConfig
from towers.errors import TowersArtifactError, TowersConfigError
from towers.features.encoder import FeatureEncoders
from towers.features.schema import FeatureSchema
from towers.nn.model import TwoTowerModel
from towers.onnx.export import ExportResult, export_two_towers
from towers.tasks.retrieval import RetrievalTask
from towers.training.example import as_tensors, require_columns
from towers.training.trainable import TrainableTowers
from towers.training.trainer import TrainingHistory, resolve_device

SAVE_FORMAT = 2  # 2: nested TowerConfig, towers and task state apart


class TrainedTowers:
    """A trained two-tower model (``model``: the towers; ``task``: its retrieval task) with encoders and config."""

    def __init__(
        self,
        *,
        model: TwoTowerModel,
        task: RetrievalTask,
        encoders: FeatureEncoders,
        config: TowerConfig,
        history: TrainingHistory | None = None,
    ) -> None:
        self.model = model
        self.task = task
        self.encoders = encoders
        self.config = config
        self.history = history

    @property
    def schema(self) -> FeatureSchema:
        return self.encoders.schema

    @property
    def dimension(self) -> int:
        return self.config.towers.output_dim

    @property
    def temperature(self) -> float:
        return self.config.loss.temperature

    def _embed(self, table: pa.Table, side: str, *, batch_size: int) -> np.ndarray:
        require_columns(table, [s.name for s in self.encoders.specs[side]], what=f"{side}-side")
        tensors = as_tensors(self.encoders.encode(table, side))
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
        return self.task.estimator.state_arrays()

    def save_estimator(self, path: Path) -> Path:
        """The estimator's arrays as a small .npz (written to a temporary name, then renamed)."""
        return self.task.estimator.save_npz(Path(path))

    def export(
        self,
        out_dir: Path,
        *,
        model_name: str,
        model_version: int | str,
        feature_service: str,
        sample: pa.Table,
        item_sample: pa.Table | None = None,
        extra_metadata: dict[str, str] | None = None,
    ) -> ExportResult:
        """Write ``query.onnx`` and ``item.onnx`` to ``out_dir`` after a parity check on ``sample`` (rows with the
        inputs of both towers; ``item_sample`` supplies the item side when ``sample`` lacks its columns). The result
        carries each file's sha256, computed once from the bytes written. ``extra_metadata`` goes into both files'
        ``metadata_props`` (the serving contract)."""
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
            extra_metadata=extra_metadata,
        )

    def state(self) -> dict[str, Any]:
        return {
            "format": SAVE_FORMAT,
            "config": self.config.to_dict(),
            "encoders": self.encoders.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "task": {k: v.detach().cpu() for k, v in self.task.state_dict().items()},
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
        """A file written by ``save`` or a training checkpoint -> TrainedTowers; raises TowersArtifactError when the
        file is missing, of another format or does not rebuild the model."""
        path = Path(path)
        if not path.is_file():
            raise TowersArtifactError(f"Saved towers {path} do not exist; train or export the model first.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises pickle, zip and runtime errors for a damaged file
            raise TowersArtifactError(f"Saved towers {path} cannot be read ({exc}); retrain or re-export it.") from exc
        if not isinstance(state, dict):
            raise TowersArtifactError(f"Saved towers {path} hold no model state; retrain or re-export it.")
        if "extra" in state:  # a training checkpoint: the trainable module's state under model. and task.
            weights = state["model"]
            state = {
                **state["extra"],
                "format": SAVE_FORMAT,
                "model": {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")},
                "task": {k[len("task."):]: v for k, v in weights.items() if k.startswith("task.")},
            }
        if state.get("format") != SAVE_FORMAT:
            raise TowersArtifactError(
                f"Saved towers {path} have format {state.get('format')!r}, expected {SAVE_FORMAT}; retrain or re-export it."
            )
        try:
            return cls.from_state(state, device=device)
        except (TowersConfigError, KeyError, RuntimeError) as exc:
            raise TowersArtifactError(f"Saved towers {path} do not rebuild the model ({exc}); retrain or re-export it.") from exc

    @classmethod
    def from_state(cls, state: dict[str, Any], *, device: str = "cpu") -> TrainedTowers:
        config = TowerConfig.from_dict(state["config"])
        encoders = FeatureEncoders.from_dict(state["encoders"])
        trainable = TrainableTowers.build(config, encoders)
        trainable.model.load_state_dict(state["model"])
        trainable.task.load_state_dict(state["task"])
        trainable.to(resolve_device(device)).eval()
        return cls(model=trainable.model, task=trainable.task, encoders=encoders, config=config)
