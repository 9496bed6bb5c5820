"""Streaming frequency estimation of items in a stream of training batches (Yi et al., RecSys 2019, Algorithms 1-2).

Each of m arrays pair A (last step a bucket was seen) and B (estimated number of steps between two occurrences):

    B[h(y)] <- (1 - alpha) * B[h(y)] + alpha * (t - A[h(y)])        once per occurrence of y
    A[h(y)] <- t
    p(y) = 1 / max_k B_k[h_k(y)]         (m > 1: the multi-hash variant takes the largest interval, i.e. the smallest p)

t counts update calls (one per training batch). Two update forms (``update``):

- ``"occurrence"`` (default, the paper's per-occurrence update): every occurrence of a bucket in a batch is one
  update. The c occurrences of a bucket in step t are taken as c arrivals spread evenly over the step, each with the
  gap (t - A) / c, so c updates in closed form are

      B <- (1 - alpha)^c * B + (1 - (1 - alpha)^c) * (t - A) / c

  and p = 1 / B estimates the expected number of occurrences of y per batch, which may exceed 1 (an item in ~3 rows
  of every batch has p ~ 3). That is the q of the sampling-bias correction: log q_j = log E[copies of j in a batch].
- ``"presence"`` (the former form): ids are de-duplicated per batch and p is capped at 1, so p estimates the
  probability that y appears in a batch at all; popular items (expected more than once per batch) are
  under-corrected by up to log(expected copies).

A bucket seen for the first time takes its interval directly (B <- (t - 0) / c) rather than averaging it with the
zero it starts from, which removes the start-up bias of the moving average. An id never seen has p = 1 (no
correction). The state lives in registered buffers, so it is saved with the model's ``state_dict``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from towers.errors import TowersConfigError

_PRIME = 2_147_483_647  # 2^31 - 1: universal hashing ((a * x + b) mod P) mod H
UPDATES = ("occurrence", "presence")


class StreamingFrequencyEstimator(nn.Module):
    hash_a: torch.Tensor
    hash_b: torch.Tensor
    last_seen: torch.Tensor
    interval: torch.Tensor
    step: torch.Tensor

    def __init__(
        self, *, buckets: int = 1 << 16, hashes: int = 1, alpha: float = 0.01, seed: int = 0, update: str = "occurrence"
    ) -> None:
        super().__init__()
        if buckets < 1 or hashes < 1 or not 0.0 < alpha <= 1.0:
            raise TowersConfigError("StreamingFrequencyEstimator needs buckets >= 1, hashes >= 1 and 0 < alpha <= 1")
        if update not in UPDATES:
            raise TowersConfigError(f"StreamingFrequencyEstimator update must be 'occurrence' or 'presence', got {update!r}")
        self.buckets, self.hashes, self.alpha, self.update_mode = int(buckets), int(hashes), float(alpha), update
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
        """Record one step (batch) in which the items ``ids`` [N] occurred (repeats are occurrences, see ``update``)."""
        self.step += 1
        t = self.step.to(torch.float64)
        ids = ids.detach()
        if self.update_mode == "presence":
            ids = torch.unique(ids)
        h = self.bucket(ids)  # [m, N]
        flat = (h + self.buckets * torch.arange(self.hashes, device=h.device).unsqueeze(1)).reshape(-1)  # [m * N]
        slots, counts = torch.unique(flat, return_counts=True)  # [U], [U]: each (array, bucket) once, with its count
        last_seen, interval = self.last_seen.view(-1), self.interval.view(-1)  # views of [m * H]
        last, previous = last_seen[slots], interval[slots]  # [U]
        gap = (t - last) / counts.to(torch.float64)  # [U] the c occurrences spread evenly over the step
        decay = (1.0 - self.alpha) ** counts.to(torch.float64)  # [U] c moving-average steps in closed form
        interval[slots] = torch.where(last > 0, decay * previous + (1.0 - decay) * gap, gap)
        last_seen[slots] = t

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        """Estimated p [N] of ``ids`` [N], float32: expected occurrences per batch (``"occurrence"``, may exceed 1)
        or the probability of appearing in a batch (``"presence"``, capped at 1); 1 for an id never seen."""
        interval = self._interval(ids)  # [N]
        if self.update_mode == "presence":
            return (1.0 / interval.clamp(min=1.0)).to(torch.float32)
        seen = interval > 0
        return torch.where(seen, 1.0 / torch.where(seen, interval, 1.0), 1.0).to(torch.float32)

    def seen(self, ids: torch.Tensor) -> torch.Tensor:
        """bool [N]: whether each id [N] has an estimate (an id never seen reads p = 1)."""
        return self._interval(ids) > 0  # [N]

    def _interval(self, ids: torch.Tensor) -> torch.Tensor:
        """The estimated steps between occurrences [N] of ``ids`` [N]: the largest over the hashes (0: never seen)."""
        h = self.bucket(ids)  # [m, N]
        rows = torch.arange(self.hashes, device=h.device).unsqueeze(1).expand_as(h)
        return self.interval[rows, h].amax(dim=0)  # [N]

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
            "update": np.asarray(self.update_mode),
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
        update = str(arrays["update"]) if "update" in arrays else "presence"  # files written before the option
        estimator = cls(buckets=buckets, hashes=hashes, alpha=float(arrays["alpha"]), update=update)
        for name in ("hash_a", "hash_b", "last_seen", "interval", "step"):
            getattr(estimator, name).copy_(torch.as_tensor(np.asarray(arrays[name])))
        return estimator
