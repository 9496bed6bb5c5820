"""A MoCo-style queue of recent item embeddings, used as extra negatives of the in-batch softmax.

After each training step the batch's item embeddings (detached) and item keys enter the queue, the oldest leave it.
An item enters the queue whenever it is in a batch, so over the Q / B batches a queue spans its expected number of
copies is p_j * Q / B (p_j: the streaming estimate of the expected occurrences of item j per batch); the
sampling-bias correction of each queued copy is therefore the uncapped log of the expected copies

    log q_j = log(p_j * Q / B)

(an item expected twice in the queue is corrected by log 2 per copy, exactly as an in-batch item expected twice per
batch is corrected by log 2).

A queued copy of a row's own positive item is never a negative of that row (``negative_mask``), whatever the
accidental-hit setting; empty slots (before the queue has filled) are never negatives either.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from towers.errors import TowersConfigError


class ItemEmbeddingQueue(nn.Module):
    embeddings: torch.Tensor
    keys: torch.Tensor
    cursor: torch.Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise TowersConfigError(f"the item queue needs size >= 1, got {size}")
        self.size = int(size)
        self.register_buffer("embeddings", torch.zeros(size, dim), persistent=False)  # [Q, D]
        self.register_buffer("keys", torch.full((size,), -1, dtype=torch.int64), persistent=False)  # [Q], -1 = empty
        self.register_buffer("cursor", torch.zeros((), dtype=torch.int64), persistent=False)

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor, keys: torch.Tensor) -> None:
        """embeddings [B, D], keys int64 [B]: overwrite the oldest B slots (the newest Q when B > Q)."""
        embeddings, keys = embeddings.detach()[-self.size :], keys.detach()[-self.size :]
        count = int(keys.shape[0])
        slots = (self.cursor + torch.arange(count, device=self.keys.device)) % self.size  # [B]
        self.embeddings[slots] = embeddings.to(self.embeddings.dtype)
        self.keys[slots] = keys.to(torch.int64)
        self.cursor.copy_((self.cursor + count) % self.size)

    def negative_mask(self, positive_keys: torch.Tensor) -> torch.Tensor:
        """positive_keys [B] -> bool [B, Q], True where the queued item may serve as a negative of row i."""
        filled = self.keys >= 0  # [Q]
        return filled.unsqueeze(0) & (self.keys.unsqueeze(0) != positive_keys.unsqueeze(1))  # [B, Q]

    def log_q(self, log_p: torch.Tensor, *, batch_size: int) -> torch.Tensor:
        """log p [Q] (expected occurrences per batch of each queued item) -> log q [Q] = log(p * Q / B), uncapped."""
        return log_p + math.log(self.size / batch_size)  # [Q]
