"""Streaming frequency estimation of items in a stream of training batches (Yi et al., RecSys 2019, Algorithms 1-2).

Each of m arrays pair A (last step a bucket was seen) and B (estimated number of steps between two sightings):

    B[h(y)] <- (1 - alpha) * B[h(y)] + alpha * (t - A[h(y)])
    A[h(y)] <- t
    p(y) = 1 / max_k B_k[h_k(y)]         (m > 1: the multi-hash variant takes the largest interval, i.e. the smallest p)

t counts update calls (one per training batch), so p is the probability that an item appears in one batch. A bucket
seen for the first time takes its interval directly (B <- t - 0) rather than averaging it with the zero it starts
from, which removes the start-up bias of the moving average. Items are updated once per batch (duplicates inside a
batch are one sighting). The state lives in registered buffers, so it is saved with the model's ``state_dict``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from towers.errors import TowersConfigError

_PRIME = 2_147_483_647  # 2^31 - 1: universal hashing ((a * x + b) mod P) mod H


class StreamingFrequencyEstimator(nn.Module):
    hash_a: torch.Tensor
    hash_b: torch.Tensor
    last_seen: torch.Tensor
    interval: torch.Tensor
    step: torch.Tensor

    def __init__(self, *, buckets: int = 1 << 16, hashes: int = 1, alpha: float = 0.01, seed: int = 0) -> None:
        super().__init__()
        if buckets < 1 or hashes < 1 or not 0.0 < alpha <= 1.0:
            raise TowersConfigError("StreamingFrequencyEstimator needs buckets >= 1, hashes >= 1 and 0 < alpha <= 1")
        self.buckets, self.hashes, self.alpha = int(buckets), int(hashes), float(alpha)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("hash_a", torch.randint(1, _PRIME, (hashes,), generator=generator))  # [m]
        self.register_buffer("hash_b", torch.randint(0, _PRIME, (hashes,), generator=generator))  # [m]
        self.register_buffer("last_seen", torch.zeros(hashes, buckets, dtype=torch.float64))  # A [m, H]
        self.register_buffer("interval", torch.zeros(hashes, buckets, dtype=torch.float64))  # B [m, H]
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))  # t

    def bucket(self, ids: torch.Tensor) -> torch.Tensor:
        """ids int64 [N] (non-negative, < 2^31) -> bucket index int64 [m, N]."""
        x = ids.to(torch.int64).unsqueeze(0)  # [1, N]
        return ((self.hash_a.unsqueeze(1) * x + self.hash_b.unsqueeze(1)) % _PRIME) % self.buckets  # [m, N]

    @torch.no_grad()
    def update(self, ids: torch.Tensor) -> None:
        """Record one step (batch) in which the items ``ids`` [N] occurred."""
        self.step += 1
        t = self.step.to(torch.float64)
        unique = torch.unique(ids.detach())  # [U]
        h = self.bucket(unique)  # [m, U]
        rows = torch.arange(self.hashes, device=h.device).unsqueeze(1).expand_as(h)  # [m, U]
        last = self.last_seen[rows, h]  # [m, U]
        previous = self.interval[rows, h]  # [m, U]
        elapsed = t - last  # [m, U]
        seen_before = last > 0
        updated = torch.where(seen_before, (1.0 - self.alpha) * previous + self.alpha * elapsed, elapsed)
        self.interval[rows, h] = updated
        self.last_seen[rows, h] = t

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        """Estimated per-step occurrence probability p [N] of ``ids`` [N], float32 in (0, 1]."""
        h = self.bucket(ids)  # [m, N]
        rows = torch.arange(self.hashes, device=h.device).unsqueeze(1).expand_as(h)
        interval = self.interval[rows, h].amax(dim=0)  # [N]
        return (1.0 / interval.clamp(min=1.0)).to(torch.float32)

    def log_probability(self, ids: torch.Tensor) -> torch.Tensor:
        """log p [N] (float32), the log q term of the sampling-bias correction."""
        return torch.log(self.probability(ids))

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The state as plain arrays (for the registry: ``np.savez``)."""
        return {
            "hash_a": self.hash_a.cpu().numpy(),
            "hash_b": self.hash_b.cpu().numpy(),
            "last_seen": self.last_seen.cpu().numpy(),
            "interval": self.interval.cpu().numpy(),
            "step": self.step.cpu().numpy(),
            "alpha": np.asarray(self.alpha),
        }

    def save_npz(self, path: Path) -> Path:
        """Write the state to ``path`` (.npz) through a temporary name."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **self.state_arrays())  # type: ignore[arg-type]
        tmp.replace(path)
        return path

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> StreamingFrequencyEstimator:
        hashes, buckets = arrays["interval"].shape
        estimator = cls(buckets=buckets, hashes=hashes, alpha=float(arrays["alpha"]))
        for name in ("hash_a", "hash_b", "last_seen", "interval", "step"):
            getattr(estimator, name).copy_(torch.as_tensor(np.asarray(arrays[name])))
        return estimator
