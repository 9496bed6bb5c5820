"""The item corpus as tensors, to draw uniform negatives, BCE negatives and the SSL batch from."""

from __future__ import annotations

import torch
from torch import nn


class CorpusSampler(nn.Module):
    """Item features of the whole corpus (non-persistent buffers) to draw uniform negatives from."""

    keys: torch.Tensor

    def __init__(self, features: dict[str, torch.Tensor], keys: torch.Tensor) -> None:
        super().__init__()
        self.names = list(features)
        for i, name in enumerate(self.names):
            self.register_buffer(f"feature_{i}", features[name], persistent=False)
        self.register_buffer("keys", keys, persistent=False)  # [C]

    @property
    def size(self) -> int:
        return int(self.keys.shape[0])

    def features(self) -> dict[str, torch.Tensor]:
        """Every corpus item's features {name: [C, ...]}."""
        return {name: getattr(self, f"feature_{i}") for i, name in enumerate(self.names)}

    def sample(self, count: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """count uniform draws with replacement -> ({name: [B', ...]}, keys [B'])."""
        index = torch.randint(0, self.size, (count,), device=self.keys.device)  # [B']
        features = {name: getattr(self, f"feature_{i}")[index] for i, name in enumerate(self.names)}
        return features, self.keys[index]
