"""Data-parallel training: W processes (ranks), DistributedDataParallel over gloo (CPU) or NCCL (CUDA), with the
in-batch negatives of every rank.

    torchrun --standalone --nproc-per-node 2 -m tower_platform train --config my.yaml   # the platform's entry
    towerctl train --nproc 2 --config my.yaml                                          # the same, launched for you

**Equivalence.** ``training.batch_size`` B is per rank: a step of W ranks trains on a global batch of G = W * B rows,
rank k taking rows [b*G + k*B, b*G + (k+1)*B) of the epoch's permutation (seeded by the training seed and the epoch,
the same on every rank) - the batches of one process with batch size G. Each rank's loss is the mean over its own B
rows against the global candidate set; the all-gather's backward returns to each rank the gradient of its rows summed
over every rank that scored them, and DDP averages the W parameter gradients, so

    (1/W) * sum_k grad((1/B) * sum_{i on rank k} l_i)  =  grad((1/G) * sum_i l_i)

is the single-process gradient on the concatenated batch, with no factor W left anywhere.

**What is gathered and what stays local** (``towers/tasks/retrieval.py``, ``towers/tasks/auxiliary.py``):

    term                    under DDP   why
    in-batch candidates     gathered    a row's negatives are the global batch: items with gradients, the rank's first
    estimator, log q        gathered    updated with the ids of the global batch, in the same order on every rank, so
                                        every rank holds the state the single process would
    accidental hits         gathered    a row's positive is masked wherever it occurs among the global candidates
    uniform negatives       drawn per   each rank draws B' corpus items from its own random stream and embeds them;
                            rank, then  the W * B' draws are every row's candidates, log q = log(W * B' / |corpus|)
                            gathered    (a single process drawing W * B')
    queue                   gathered    the global batch enters it (the same queue everywhere); log q uses G
    SSL (InfoNCE)           local       each rank's SSL batch of ssl.sample_size items and its own negatives: the SSL
                                        objective does not change with the world size (its batch size and temperature
                                        are tuned together) and DDP's average is the mean of W independent SSL terms;
                                        gathering would cost two all-gathers of S x D per step and change the objective
    DAT mimic               local       a mean over rows: DDP's average of the local means is the global mean, exactly
    Category Alignment      gathered    per-category covariances, the major category and min_category_items are
                                        statistics of the batch; every rank computes L_CA of the global batch
    BCE (loss.function)     local       each row's S negatives come from its rank; a per-row sum, then the row mean
    dropout, DAT id dropout local       per-row draws from the rank's random stream

**Random streams.** Every rank seeds torch with ``training.seed + rank`` (rank 0 is the single-process run); DDP
broadcasts rank 0's weights and buffers when it wraps the model. Buffers are never re-broadcast in the forward pass:
the estimator and queue are identical by construction, and the corpus tensors do not change.

**Checkpoints** are written by rank 0 with the world size and every rank's random state, and resume only with the
same world size (the shards and random streams depend on it); ``Trainer.load_checkpoint`` refuses another.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from towers.errors import TowersInputError
from towers.tasks.gather import BatchGather

# The variables torchrun (torch.distributed.run) sets for each process it starts.
WORLD_SIZE_ENV, RANK_ENV, LOCAL_RANK_ENV = "WORLD_SIZE", "RANK", "LOCAL_RANK"
DEFAULT_TIMEOUT = timedelta(minutes=60)  # rank 0 may build a training set while the others wait in a collective
_GATHER_DEPRECATION = r"torch\.distributed\.nn\.functional\.all_gather is deprecated"

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get(WORLD_SIZE_ENV, "1")) > 1


class AllGather(BatchGather):
    """``BatchGather`` over a process group: every rank must pass tensors of the same shape at the same point."""

    def __init__(self, *, rank: int, world_size: int, group: Any = None) -> None:
        self.rank, self.world_size, self.group = rank, world_size, group

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, ...] -> [W * B, ...], differentiable (torch.distributed.nn.functional.all_gather)."""
        from torch.distributed.nn.functional import all_gather

        with warnings.catch_warnings():  # torch 2.13 deprecates it in favour of a private module; it is still the
            warnings.filterwarnings("ignore", message=_GATHER_DEPRECATION, category=FutureWarning)  # public API
            parts = all_gather(x, group=self.group if self.group is not None else dist.group.WORLD)
        return torch.cat(parts)

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, ...] -> [W * B, ...] without gradients."""
        x = x.detach().contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x, group=self.group)
        return torch.cat(parts)

    def local_first(self, x: torch.Tensor) -> torch.Tensor:
        """[W * B, ...] in rank order -> blocks k, k+1, ..., W-1, 0, ..., k-1 (this rank's first)."""
        if self.rank == 0:
            return x
        start = x.shape[0] // self.world_size * self.rank
        return torch.cat([x[start:], x[:start]])


class _LossForward(nn.Module):
    """``model.loss`` as a forward pass, for DistributedDataParallel (which hooks the forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        return self.model.loss(batch)


class DataParallel:
    """This process's place in a data-parallel run and the collectives the trainer and the platform need.

    Tensors go through the default group (gloo, or gloo for CPU and NCCL for CUDA tensors when CUDA is present);
    Python objects and metrics through a gloo group of their own.
    """

    def __init__(self, *, rank: int, world_size: int, local_rank: int, control: Any = None) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.control = control
        self.gather = AllGather(rank=rank, world_size=world_size)

    @classmethod
    def initialize(
        cls, *, rank: int, world_size: int, local_rank: int | None = None, init_method: str = "env://",
        timeout: timedelta = DEFAULT_TIMEOUT,
    ) -> DataParallel:
        """Join the process group (every rank calls this with its own rank)."""
        local_rank = rank if local_rank is None else local_rank
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", init_method=init_method, rank=rank,
                                world_size=world_size, timeout=timeout)
        control = dist.new_group(backend="gloo", timeout=timeout) if cuda else None
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, control=control)

    @classmethod
    def from_environment(cls, *, timeout: timedelta = DEFAULT_TIMEOUT) -> DataParallel:
        """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
        missing = [name for name in (RANK_ENV, WORLD_SIZE_ENV) if name not in os.environ]
        if missing:
            raise TowersInputError(
                f"Data-parallel training needs {missing} in the environment; start it with torchrun "
                "(torchrun --nproc-per-node N -m tower_platform train ...) or towerctl train --nproc N."
            )
        return cls.initialize(rank=int(os.environ[RANK_ENV]), world_size=int(os.environ[WORLD_SIZE_ENV]),
                              local_rank=int(os.environ.get(LOCAL_RANK_ENV, os.environ[RANK_ENV])), timeout=timeout)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> DataParallel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """The rank's device for ``training.device``: its own GPU (LOCAL_RANK) for "auto" or "cuda...", else the CPU."""
        if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        return torch.device("cuda", self.local_rank % max(torch.cuda.device_count(), 1))

    def wrap(self, model: nn.Module) -> Callable[[dict[str, torch.Tensor]], Any]:
        """DistributedDataParallel around ``model.loss`` (``model`` already on its device); weights and buffers are
        broadcast from rank 0 here, never again in the forward pass."""
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(
            _LossForward(model), device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,
        )

    # --- collectives on Python values ---------------------------------------------------------------------------------

    def broadcast(self, value: T | None) -> T:
        """Rank 0's ``value`` on every rank (pickled; the other ranks pass None)."""
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]  # type: ignore[return-value]

    def from_main(self, compute: Callable[[], float]) -> float:
        """``compute()`` run on rank 0 only (e.g. a validation metric), its result on every rank."""
        return float(self.broadcast(compute() if self.is_main else None))

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        total = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(total, group=self.control)
        return float(total) / self.world_size

    def barrier(self) -> None:
        dist.barrier(group=self.control)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value, group=self.control)
        return out

    def require_same(self, value: str, *, what: str) -> None:
        """Raise when ranks disagree on ``value`` (e.g. a digest of the encoders each rank fitted)."""
        values = self.gather_objects(value)
        if len(set(values)) > 1:
            raise TowersInputError(
                f"The {self.world_size} ranks hold different {what}; give every rank the same training data."
            )
