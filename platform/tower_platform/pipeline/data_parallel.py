"""Training on several processes: torchrun starts N copies of ``towerctl train``, rank 0 does the platform's work.

    towerctl train --nproc 2 --config my.yaml                                  # launches the two ranks itself
    torchrun --standalone --nproc-per-node 2 -m tower_platform train ...       # the same; several machines: --nnodes,
                                                                               # --rdzv-endpoint (torchrun's options)

Rank 0 runs the command as one process would: it builds the training set from Feast, evaluates, exports and
registers. Whenever it fits towers (``train_and_evaluate`` fits once, or twice with the refit) it first broadcasts the
job - the training rows, the item corpus, the feature schema and the config - and every other rank, waiting in
``follow_rank0``, fits the same towers with it (``towers/training/distributed.py``: each rank trains its share of every
global batch, only rank 0 validates). The other ranks never open Feast, the registry or the vector store.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay inside the functions
    from towers.config import TowerConfig
    from towers.features.schema import FeatureSchema
    from towers.training import DataParallel, TrainedTowers

ENTRY_MODULE = "tower_platform"  # `python -m tower_platform` is towerctl


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of several started by torchrun."""
    from towers.training.distributed import launched_by_torchrun as launched

    return launched()


def launch_ranks(nproc: int, arguments: list[str]) -> None:
    """Run ``towerctl <arguments>`` on ``nproc`` local processes (torch's elastic launcher, as torchrun --standalone)
    and wait; a failed rank raises a TowerError with the exit code of the lowest failed rank (rank 0's is the
    command's own, its message already printed by that rank)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from tower_platform.errors import TowerError

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # cores shared by ranks
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)("-u", "-m", ENTRY_MODULE, *arguments)
    except ChildFailedError as exc:
        rank = min(exc.failures)
        code = exc.failures[rank].exitcode
        error = TowerError(f"towerctl {arguments[0]} on {nproc} processes failed: rank {rank} exited with code {code} "
                           "(its own message is above).")
        error.exit_code = code if code > 0 else 1
        raise error from None


@dataclass(frozen=True)
class FitJob:
    """What rank 0 sends the other ranks before each fit: the tables and the settings every rank fits with."""

    train: pa.Table
    corpus: pa.Table
    schema: dict[str, Any]
    config: dict[str, Any]
    validated: bool  # rank 0 validates each epoch; the other ranks receive its metric


class RankZeroFit:
    """``fit_two_tower`` for rank 0: broadcast the job, then fit as one rank of the run (the ``fit`` of
    ``train_and_evaluate``). ``finish()`` releases the other ranks."""

    def __init__(self, data_parallel: DataParallel) -> None:
        self.data_parallel = data_parallel
        self.fitting = False  # inside a fit: the other ranks are in its collectives, not waiting for a job

    def __call__(
        self,
        train: pa.Table,
        *,
        corpus: pa.Table,
        schema: FeatureSchema,
        config: TowerConfig,
        validation: Callable[[TrainedTowers], float] | None = None,
        progress: bool = True,
    ) -> TrainedTowers:
        from towers.training import fit_two_tower

        self.data_parallel.broadcast(FitJob(train, corpus, schema.to_dict(), config.to_dict(), validation is not None))
        self.fitting = True
        towers = fit_two_tower(train, corpus=corpus, schema=schema, config=config, validation=validation,
                               progress=progress, distributed=self.data_parallel)
        self.fitting = False
        return towers

    def finish(self) -> None:
        """Release the ranks waiting for a job (not after a failed fit: its ranks are stopped by the launcher when
        rank 0 exits)."""
        if not self.fitting:
            self.data_parallel.broadcast(None)


def _validated_on_rank0(_: TrainedTowers) -> float:
    raise AssertionError("only rank 0 validates; the trainer broadcasts its metric to the other ranks")


def follow_rank0(data_parallel: DataParallel) -> int:
    """Ranks 1..N-1: fit every job rank 0 broadcasts, until it sends None; returns the number of fits."""
    from towers.config import TowerConfig
    from towers.features.schema import FeatureSchema
    from towers.training import fit_two_tower

    fits = 0
    while (job := data_parallel.broadcast(None)) is not None:
        fit_two_tower(job.train, corpus=job.corpus, schema=FeatureSchema.from_dict(job.schema),
                      config=TowerConfig.from_dict(job.config),
                      validation=_validated_on_rank0 if job.validated else None, progress=False,
                      distributed=data_parallel)
        fits += 1
    return fits
