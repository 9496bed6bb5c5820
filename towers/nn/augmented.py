"""DAT augmented vectors (Yu et al., DLP-KDD 2021): a_u per query id and a_v per item id, concatenated to the inputs
of their own towers, so each tower sees a summary of what the other tower said about its id. The adaptive-mimic and
category-alignment losses that train them live in ``towers/losses/dat.py``.

An id that is missing or out of vocabulary (id layout of ``towers/features/encoder.py``: 0 missing, 1..oov_buckets
OOV) gets zeros or a learned default vector, inside the ONNX graph. During training a share of rows is given that
default too (id dropout): without it the towers only ever see known ids and serve unseen ones (most queries of a time
split come from new users) with an input they never trained on.
"""

from __future__ import annotations

import torch
from torch import nn


class AugmentedVectors(nn.Module):
    """ids int64 [B] -> augmented vectors [B, D]; ids below ``first_token_id`` (missing, OOV) get the default."""

    def __init__(self, size: int, dim: int, *, first_token_id: int, learned_default: bool) -> None:
        super().__init__()
        self.first_token_id = int(first_token_id)
        self.table = nn.Embedding(size, dim)
        nn.init.normal_(self.table.weight, std=0.01)
        self.default = nn.Parameter(torch.zeros(dim)) if learned_default else None

    def forward(self, ids: torch.Tensor, *, use_default: torch.Tensor | None = None) -> torch.Tensor:
        """ids [B]; ``use_default`` bool [B] forces the default (training the learned default) -> [B, D]."""
        vectors = self.table(ids)  # [B, D]
        unknown = ids < self.first_token_id  # [B]
        if use_default is not None:
            unknown = unknown | use_default
        default = self.default if self.default is not None else torch.zeros_like(vectors[0])  # [D]
        return torch.where(unknown.unsqueeze(1), default.to(vectors.dtype).unsqueeze(0), vectors)  # [B, D]
