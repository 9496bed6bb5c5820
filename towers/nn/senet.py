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

    def gate_blocks(
        self, strings: torch.Tensor, scaled: torch.Tensor | None, missing: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The same gating on fields held as blocks (a few ops instead of a few per field): string fields stacked
        [B, F_str, E], numeric fields as their values and indicators [B, F_num] each (a numeric field is the pair)."""
        squeezed = [strings.mean(dim=2)]  # [B, F_str]
        if scaled is not None and missing is not None:
            squeezed.append((scaled + missing) / 2.0)  # [B, F_num], the mean of each (value, indicator) pair
        gates = self.excitation(torch.cat(squeezed, dim=1))  # [B, F]
        count = strings.shape[1]
        strings = strings * gates[:, :count].unsqueeze(2)  # [B, F_str, E]
        if scaled is None or missing is None:
            return strings, scaled, missing
        numeric = gates[:, count:]  # [B, F_num]
        return strings, scaled * numeric, missing * numeric
