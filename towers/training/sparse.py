"""Row-sparse embedding updates: a step's cost follows the batch, not the vocabulary (``training.sparse_embeddings``).

With dense gradients every step zeroes, clips and updates every row of every embedding table: at a million items the
item-id table alone (1M x 32 floats) costs more per step than the towers. With ``sparse_embeddings`` the tables
return row-sparse gradients (``nn.Embedding(sparse=True)``) and a lazy optimizer updates only the rows the batch
looked up: ``torch.optim.SparseAdam`` beside AdamW for the dense parameters, or Adagrad (which takes sparse
gradients itself). What changes against the dense run: Adam moments of rows a step does not touch are not decayed
that step, and embedding rows get no weight decay (the dense parameters keep theirs).

    optimizer = SplitOptimizer.build(model, config)      # marks the tables sparse
    clip_grad_norm(model.parameters(), config.grad_clip)  # one global norm over sparse and dense gradients
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from towers.config import TrainerConfig


def embedding_tables(model: nn.Module) -> list[nn.Embedding]:
    return [module for module in model.modules() if isinstance(module, nn.Embedding)]


class SplitOptimizer:
    """A lazy optimizer for the embedding tables beside the configured one for every other parameter."""

    def __init__(self, sparse: torch.optim.Optimizer | None, dense: torch.optim.Optimizer | None) -> None:
        self.parts = [p for p in (sparse, dense) if p is not None]

    @classmethod
    def build(cls, model: nn.Module, config: TrainerConfig) -> SplitOptimizer:
        tables = embedding_tables(model)
        for table in tables:
            table.sparse = True
        sparse_ids = {id(t.weight) for t in tables}
        sparse = [t.weight for t in tables if t.weight.requires_grad]
        dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
        lr = config.learning_rate
        if config.optimizer == "adamw":
            lazy = torch.optim.SparseAdam(sparse, lr=lr) if sparse else None
            rest = torch.optim.AdamW(dense, lr=lr, weight_decay=config.weight_decay) if dense else None
        else:  # adagrad: sparse gradients natively, but without weight decay
            lazy = torch.optim.Adagrad(sparse, lr=lr) if sparse else None
            rest = torch.optim.Adagrad(dense, lr=lr, weight_decay=config.weight_decay) if dense else None
        return cls(lazy, rest)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for part in self.parts for group in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict[str, Any]:
        return {"split": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for part, saved in zip(self.parts, state["split"], strict=True):
            part.load_state_dict(saved)


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` over dense and row-sparse gradients: one global L2 norm, every gradient
    scaled by ``min(1, max_norm / norm)``."""
    grads = [p.grad for p in list(parameters) if p.grad is not None]
    if not grads:
        return torch.zeros(())
    squares = []
    for grad in grads:
        if grad.is_sparse:
            grad = grad.coalesce()  # a row looked up twice in a batch appears twice before coalescing
            squares.append(grad.values().float().pow(2).sum())
        else:
            squares.append(grad.float().pow(2).sum())
    total = torch.stack(squares).sum().sqrt()
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.item() if grad.is_sparse else scale.to(grad.dtype))
    return total
