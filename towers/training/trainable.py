"""The towers and their retrieval task as the trainer sees them: one module with ``loss(batch) -> (loss, logs)``.

Parameters are the towers' (the task holds buffers only: the estimator's arrays, the queue); the state dict holds
both under ``model.`` and ``task.``.
"""

from __future__ import annotations

import torch
from torch import nn

from towers.config import TowerConfig
from towers.features.encoder import FeatureEncoders
from towers.nn.model import TwoTowerModel
from towers.tasks.auxiliary import auxiliary_losses
from towers.tasks.retrieval import RetrievalTask


class TrainableTowers(nn.Module):
    """``model`` (the towers) plus ``task`` (the retrieval task that composes the auxiliary losses)."""

    def __init__(self, model: TwoTowerModel, task: RetrievalTask) -> None:
        super().__init__()
        self.model = model
        self.task = task

    @classmethod
    def build(cls, config: TowerConfig, encoders: FeatureEncoders) -> TrainableTowers:
        """The towers of ``config`` and the task with the auxiliary losses it asks for."""
        model = TwoTowerModel(config, encoders)
        return cls(model, RetrievalTask(config, auxiliaries=auxiliary_losses(config, model)))

    def attach_corpus(self, features: dict[str, torch.Tensor], keys: torch.Tensor) -> None:
        self.task.attach_corpus(features, keys, model=self.model)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training contract: a batch of tensors -> (scalar loss, logs of detached tensors)."""
        return self.task(self.model, batch)
