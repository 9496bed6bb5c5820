"""A trainer that knows nothing of the model (minGPT style).

Contract: ``model.loss(batch) -> (loss, logs)`` where ``batch`` is a dict of tensors sliced from the preloaded
``tensors`` (every tensor has the examples on its first axis). Batches are index slices of a shuffled permutation,
not a per-row Dataset. The trainer seeds, picks the device (bf16 autocast on CUDA), clips gradients, shows a progress
bar with loss and examples/s on stderr, stops early on a validation callback (higher is better) and restores the best
weights, and writes/resumes checkpoints (weights, optimizer, step, epoch, plus whatever the caller adds: config,
encoders).
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from towers.config import TrainerConfig
from towers.errors import TowersArtifactError, TowersConfigError, TowersInputError

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
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                    for p in params)
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                 fused=fused or None)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    raise TowersConfigError(f"optimizer {config.optimizer!r} is not 'adamw' or 'adagrad'")


class _Progress:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, *, enabled: bool, total: int) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} ex/s"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.bar.add_task("training", total=total, loss="-", rate="-")
        self.bar.start()

    def update(self, *, completed: int, description: str, loss: float | None = None, rate: float | None = None) -> None:
        if self.bar is None:
            return
        fields: dict[str, Any] = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        if rate is not None:
            fields["rate"] = f"{rate:,.0f}"
        self.bar.update(self.task, completed=completed, description=description, **fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


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
    ) -> None:
        lengths = {int(t.shape[0]) for t in tensors.values()}
        if len(lengths) != 1:
            raise TowersInputError(f"all training tensors need the same number of rows; got lengths {sorted(lengths)}")
        loss_fn = getattr(model, "loss", None)
        if not callable(loss_fn):
            raise TypeError(f"{type(model).__name__} has no loss(batch) -> (loss, logs) method; the Trainer needs one")
        self.loss_fn: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, Any]]] = loss_fn
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
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

    def batches_per_epoch(self) -> int:
        size = self.config.batch_size
        return max(1, self.num_examples // size) if self.num_examples >= size else 1

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_examples, generator=generator).to(self.device)  # [N]

    def _batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: t.index_select(0, index) for name, t in self.tensors.items()}

    # --- the loop -------------------------------------------------------------------------------------------------

    def run(self) -> TrainingHistory:
        config = self.config
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.load_checkpoint(self.checkpoint_path)
        per_epoch = self.batches_per_epoch()
        total = config.epochs * per_epoch
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        use_autocast = self.device.type == "cuda" and config.autocast_bf16
        progress = _Progress(enabled=config.progress, total=total)
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

    def _train_epoch(self, *, per_epoch: int, use_autocast: bool, progress: _Progress) -> None:
        config = self.config
        self.model.train()
        permutation = self._permutation(self.epoch)
        size = min(config.batch_size, self.num_examples)
        loss_sum = torch.zeros((), device=self.device)
        started, seen, done = time.perf_counter(), 0, 0
        for b in range(per_epoch):
            if self._step_limit_reached():
                break
            batch = self._batch(permutation[b * size : (b + 1) * size])
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_autocast):
                loss, _ = self.loss_fn(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.optimizer.step()
            loss_sum += loss.detach()
            self.step += 1
            done += 1
            seen += size
            if config.progress and (done % config.log_every == 0 or done == per_epoch):
                rate = seen / max(time.perf_counter() - started, 1e-9)
                progress.update(
                    completed=self.step,
                    description=f"epoch {self.epoch + 1}/{config.epochs}",
                    loss=float(loss.detach()),
                    rate=rate,
                )
        elapsed = max(time.perf_counter() - started, 1e-9)
        record: dict[str, float] = {
            "epoch": float(self.epoch + 1),
            "loss": float(loss_sum) / max(done, 1),
            "examples_per_s": seen / elapsed,
            "seconds": elapsed,
        }
        self.epoch += 1
        if self.validation is not None:
            self.model.eval()
            with torch.no_grad():
                metric = float(self.validation())
            self.model.train()
            record["validation"] = metric
            self._track_best(metric)
        self.history.epochs.append(record)
        self.history.steps = self.step
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)

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
        }
        if self.checkpoint_extra is not None:
            state["extra"] = self.checkpoint_extra()
        return state

    def save_checkpoint(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(self.checkpoint(), tmp)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Resume: weights, optimizer, step, epoch, early-stopping state and the CPU random state."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise TowersArtifactError(f"checkpoint {path} has format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        history = state["history"]
        self.history = TrainingHistory(**history)
        self._best_state = copy.deepcopy(state["best_state"])
        self._epochs_without_gain = int(state["epochs_without_gain"])
        torch.set_rng_state(state["rng"])
