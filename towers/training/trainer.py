"""A trainer that knows nothing of the model (minGPT style).

Contract: ``model.loss(batch) -> (loss, logs)`` where ``batch`` is a dict of tensors sliced from the preloaded
``tensors`` (every tensor has the examples on its first axis). Batches are index slices of a shuffled permutation,
not a per-row Dataset. The trainer seeds, picks the device (bf16 autocast on CUDA, and on a CPU with bf16 hardware
when asked: towers/training/precision.py), clips gradients, shows progress with loss and examples/s on stderr (towers.progress: a bar on a terminal, periodic lines in a log), stops early on a validation callback (higher is better) and restores the best
weights, and writes/resumes checkpoints (weights, optimizer, step, epoch, plus whatever the caller adds: config,
encoders).

Data parallel (``distributed``: a ``DataParallel`` from ``towers/training/distributed.py``): the model runs wrapped in
DistributedDataParallel on the rank's device, ``batch_size`` is per rank and step b of an epoch takes, on rank k, the
rows [b*G + k*B, b*G + (k+1)*B) of the epoch's permutation (G = W * B: the batches of one process with batch size G).
Rank 0 alone validates (the metric is broadcast, so every rank stops at the same epoch), shows progress and writes
checkpoints; a checkpoint holds the world size and every rank's random state and resumes only with the same world size.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from towers.config import TrainerConfig
from towers.errors import TowersArtifactError, TowersConfigError, TowersInputError
from towers.progress import ProgressReporter
from towers.training.allocator import retain_freed_memory
from towers.training.precision import autocast_device_type, autocast_enabled

if TYPE_CHECKING:  # pragma: no cover
    from towers.training.distributed import DataParallel

CHECKPOINT_FORMAT = 1


@dataclass
class TrainingHistory:
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    steps: int = 0
    stopped_early: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def build_optimizer(model: nn.Module, config: TrainerConfig) -> torch.optim.Optimizer:
    """AdamW (the fused kernel: one pass over each parameter instead of ~10, which matters for the embedding tables
    that are updated densely at every step) or Adagrad."""
    if config.sparse_embeddings:  # a lazy optimizer for the embedding tables (towers/training/sparse.py)
        from towers.training.sparse import SplitOptimizer

        return SplitOptimizer.build(model, config)  # type: ignore[return-value]
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                    for p in params)
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                 fused=fused or None)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    raise TowersConfigError(f"optimizer {config.optimizer!r} is not 'adamw' or 'adagrad'")


def clip_gradients(parameters: Any, max_norm: float, *, sparse: bool) -> None:
    """Clip to one global norm; row-sparse embedding gradients need the norm of their values."""
    if sparse:
        from towers.training.sparse import clip_grad_norm

        clip_grad_norm(parameters, max_norm)
    else:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        tensors: dict[str, torch.Tensor],
        config: TrainerConfig,
        *,
        validation: Callable[[], float] | None = None,
        checkpoint_path: Path | None = None,
        checkpoint_extra: Callable[[], dict[str, Any]] | None = None,
        distributed: DataParallel | None = None,
    ) -> None:
        lengths = {int(t.shape[0]) for t in tensors.values()}
        if len(lengths) != 1:
            raise TowersInputError(f"all training tensors need the same number of rows; got lengths {sorted(lengths)}")
        loss_fn = getattr(model, "loss", None)
        if not callable(loss_fn):
            raise TypeError(f"{type(model).__name__} has no loss(batch) -> (loss, logs) method; the Trainer needs one")
        self.loss_fn: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, Any]]] = loss_fn
        self.config = config
        self.distributed = distributed
        self.world_size, self.rank = (distributed.world_size, distributed.rank) if distributed else (1, 0)
        self.is_main = self.rank == 0
        self.device = distributed.device(config.device) if distributed else resolve_device(config.device)
        if self.device.type == "cpu" and config.retain_freed_memory:
            retain_freed_memory()  # the step's large tensors are reused, not page-faulted afresh each step
        self.model = model.to(self.device)
        # the forward pass of a step: DistributedDataParallel around model.loss under DDP
        self.forward = distributed.wrap(self.model) if distributed else self.loss_fn
        self.tensors = {name: t.to(self.device) for name, t in tensors.items()}
        self.num_examples = lengths.pop()
        self.validation = validation
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.checkpoint_extra = checkpoint_extra
        self.optimizer = build_optimizer(self.model, config)
        self.history = TrainingHistory()
        self.step = 0
        self.epoch = 0
        self._best_state: dict[str, torch.Tensor] | None = None
        self._epochs_without_gain = 0

    # --- batches --------------------------------------------------------------------------------------------------

    def local_batch_size(self) -> int:
        """Rows per rank and step: ``batch_size``, or an equal share of a training set smaller than one global batch."""
        return min(self.config.batch_size, self.num_examples // self.world_size)

    def batches_per_epoch(self) -> int:
        return max(1, self.num_examples // (self.local_batch_size() * self.world_size))

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of the examples in ``epoch`` [N]: seeded by the seed and the epoch (the same on every rank)."""
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_examples, generator=generator).to(self.device)  # [N]

    def batch_index(self, permutation: torch.Tensor, b: int) -> torch.Tensor:
        """This rank's rows [B] of step ``b``: block ``rank`` of the global batch permutation[b * G : (b + 1) * G]."""
        size = self.local_batch_size()
        start = b * size * self.world_size + size * self.rank
        return permutation[start : start + size]

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: t.index_select(0, index) for name, t in self.tensors.items()}

    # --- the loop -------------------------------------------------------------------------------------------------

    def run(self) -> TrainingHistory:
        config = self.config
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.load_checkpoint(self.checkpoint_path)
        if self.local_batch_size() < 1:
            raise TowersInputError(
                f"{self.num_examples} training rows cannot be shared by {self.world_size} processes; use fewer processes."
            )
        per_epoch = self.batches_per_epoch()
        total = config.epochs * per_epoch
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        use_autocast = autocast_enabled(self.device, config)
        progress = ProgressReporter("training", total=total, unit="steps", enabled=config.progress and self.is_main)
        try:
            while self.epoch < config.epochs and not self._step_limit_reached() and not self.history.stopped_early:
                self._train_epoch(per_epoch=per_epoch, use_autocast=use_autocast, progress=progress)
        finally:
            progress.close()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        return self.history

    def _step_limit_reached(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def train_step(self, batch: dict[str, torch.Tensor], *, use_autocast: bool = False) -> torch.Tensor:
        """One optimisation step on this rank's ``batch``: forward, backward (gradients averaged over the ranks under
        DDP), clip, step. Returns the detached loss of this rank's rows; no host synchronisation."""
        with torch.autocast(device_type=autocast_device_type(self.device), dtype=torch.bfloat16, enabled=use_autocast):
            loss, _ = self.forward(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            clip_gradients(self.model.parameters(), self.config.grad_clip, sparse=self.config.sparse_embeddings)
        self.optimizer.step()
        return loss.detach()

    def _train_epoch(self, *, per_epoch: int, use_autocast: bool, progress: ProgressReporter) -> None:
        config = self.config
        self.model.train()
        permutation = self.permutation(self.epoch)
        global_size = self.local_batch_size() * self.world_size
        loss_sum = torch.zeros((), device=self.device)
        started, seen, done = time.perf_counter(), 0, 0
        for b in range(per_epoch):
            if self._step_limit_reached():
                break
            loss = self.train_step(self.batch(self.batch_index(permutation, b)), use_autocast=use_autocast)
            loss_sum += loss
            self.step += 1
            done += 1
            seen += global_size
            if progress.enabled and (done % config.log_every == 0 or done == per_epoch):
                rate = seen / max(time.perf_counter() - started, 1e-9)
                progress.update(
                    completed=self.step,
                    description=f"epoch {self.epoch + 1}/{config.epochs}",
                    rate=rate,
                    rate_unit="ex/s",
                    loss=float(loss.detach()),
                )
        elapsed = max(time.perf_counter() - started, 1e-9)
        mean_loss = float(loss_sum) / max(done, 1)
        record: dict[str, float] = {
            "epoch": float(self.epoch + 1),
            "loss": self.distributed.mean(mean_loss) if self.distributed else mean_loss,  # of the global batches
            "examples_per_s": seen / elapsed,
            "seconds": elapsed,
        }
        self.epoch += 1
        if self.validation is not None:
            metric = self.distributed.from_main(self._validate) if self.distributed else self._validate()
            record["validation"] = metric
            self._track_best(metric)
        self.history.epochs.append(record)
        self.history.steps = self.step
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)

    def _validate(self) -> float:
        self.model.eval()
        with torch.no_grad():
            metric = float(self.validation())  # type: ignore[misc]
        self.model.train()
        return metric

    def _track_best(self, metric: float) -> None:
        best = self.history.best_metric
        if best is None or metric > best:
            self.history.best_metric, self.history.best_epoch = metric, self.epoch
            self._best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self._epochs_without_gain = 0
            return
        self._epochs_without_gain += 1
        if self._epochs_without_gain >= self.config.patience:
            self.history.stopped_early = True
            if self.is_main:
                print(
                    f"early stop after epoch {self.epoch}: validation {metric:.4f} did not beat {best:.4f} "
                    f"(epoch {self.history.best_epoch}) for {self.config.patience} epochs",
                    file=sys.stderr,
                )

    # --- checkpoints ----------------------------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "trainer_config": asdict(self.config),
            "history": asdict(self.history),
            "best_state": self._best_state,
            "epochs_without_gain": self._epochs_without_gain,
            "rng": torch.get_rng_state(),
            "cuda_rng": self._cuda_rng(),
            "world_size": self.world_size,
        }
        if self.distributed:  # every rank's random streams (a collective: every rank calls checkpoint())
            state["rank_rng"] = self.distributed.gather_objects((torch.get_rng_state(), self._cuda_rng()))
        if self.checkpoint_extra is not None:
            state["extra"] = self.checkpoint_extra()
        return state

    def save_checkpoint(self, path: Path) -> Path:
        """Write the checkpoint (rank 0 only under DDP: the other ranks take part in gathering the random states and
        wait for the file; several machines need a shared checkpoint folder)."""
        path = Path(path)
        state = self.checkpoint()
        if self.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)
        if self.distributed:
            self.distributed.barrier()  # the file is complete before any rank goes on (and may read it)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Resume: weights, optimizer, step, epoch, early-stopping state and the CPU random state."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise TowersArtifactError(f"checkpoint {path} has format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}")
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world_size:
            raise TowersArtifactError(
                f"Checkpoint {path} was written by a run on {saved_world} process(es) and this run has "
                f"{self.world_size}; resume it with {saved_world} (towerctl train --nproc {saved_world}, torchrun "
                f"--nproc-per-node {saved_world}) or delete it to start over."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        history = state["history"]
        self.history = TrainingHistory(**history)
        self._best_state = copy.deepcopy(state["best_state"])
        self._epochs_without_gain = int(state["epochs_without_gain"])
        cpu, cuda = state["rank_rng"][self.rank] if self.distributed else (state["rng"], state.get("cuda_rng"))
        torch.set_rng_state(cpu)
        if cuda is not None and self.device.type == "cuda":  # uniform draws and dropout on a GPU use its generator
            torch.cuda.set_rng_state(cuda, self.device)

    def _cuda_rng(self) -> torch.Tensor | None:
        return torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
