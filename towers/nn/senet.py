"""Squeeze-excitation gating over the feature fields of a tower (SENet, as used for feature importance by FiBiNET).

Squeeze: z_f = mean of field f's embedding [B, F]. Excitation: A = sigmoid(W2 relu(W1 z)) [B, F], with W1 of width
max(1, F // reduction). Re-weight: field f's embedding times A_f. Fields may differ in width.
"""

from __future__ import annotations

import torch
from torch import nn


class FieldGate(nn.Module):
    def __init__(self, fields: int, *, reduction: int = 2) -> None:
        super().__init__()
        hidden = max(1, fields // reduction)
        self.excitation = nn.Sequential(nn.Linear(fields, hidden), nn.ReLU(), nn.Linear(hidden, fields), nn.Sigmoid())

    def weights(self, fields: list[torch.Tensor]) -> torch.Tensor:
        """F field embeddings [B, w_f] -> gates [B, F] in (0, 1)."""
        squeezed = torch.stack([field.mean(dim=1) for field in fields], dim=1)  # [B, F]
        return self.excitation(squeezed)  # [B, F]

    def forward(self, fields: list[torch.Tensor]) -> list[torch.Tensor]:
        gates = self.weights(fields)  # [B, F]
        return [field * gates[:, f : f + 1] for f, field in enumerate(fields)]  # F x [B, w_f]
