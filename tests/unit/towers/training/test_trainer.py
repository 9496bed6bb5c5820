"""The trainer on a model it knows nothing about: determinism, resume, early stopping, optimizers."""

from __future__ import annotations

import pytest
import torch
from torch import nn


from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.errors import TowersInputError
from towers.training.trainer import Trainer, TrainerConfig


class LinearRegression(nn.Module):
    """Any object with loss(batch) -> (loss, logs) will do."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        prediction = self.linear(batch["x"]).squeeze(1)  # [B]
        loss = ((prediction - batch["y"]) ** 2).mean()
        return loss, {"loss": loss.detach()}


def _data() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=generator)  # [N, 3]
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3  # [N]
    return {"x": x, "y": y}


def _train(config: TrainerConfig, **kwargs) -> tuple[LinearRegression, Trainer]:
    torch.manual_seed(0)
    model = LinearRegression()
    trainer = Trainer(model, _data(), config, **kwargs)
    trainer.run()
    return model, trainer


BASE = TrainerConfig(epochs=4, batch_size=32, learning_rate=0.05, progress=False, grad_clip=1.0)


def test_trains_and_is_deterministic() -> None:
    model_a, trainer = _train(BASE)
    model_b, _ = _train(BASE)
    assert trainer.step == 4 * (256 // 32)
    assert trainer.history.epochs[-1]["loss"] < 0.2 * trainer.history.epochs[0]["loss"]
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path) -> None:
    uninterrupted, _ = _train(BASE)
    path = tmp_path / "ckpt" / "checkpoint.pt"
    _train(TrainerConfig(**{**BASE.__dict__, "epochs": 2}), checkpoint_path=path, checkpoint_extra=lambda: {"note": "x"})
    assert path.exists()
    assert torch.load(path, weights_only=True)["extra"] == {"note": "x"}
    resumed, trainer = _train(BASE, checkpoint_path=path)  # a fresh model, resumed from epoch 2
    assert trainer.epoch == 4 and len(trainer.history.epochs) == 4
    for a, b in zip(uninterrupted.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(a, b)


def test_early_stopping_restores_the_best_weights() -> None:
    metrics = iter([0.5, 0.7, 0.6, 0.4, 0.9, 0.9])
    snapshots: list[torch.Tensor] = []
    model_holder: dict[str, nn.Module] = {}

    def validation() -> float:
        snapshots.append(model_holder["model"].linear.weight.detach().clone())
        return next(metrics)

    torch.manual_seed(0)
    model = LinearRegression()
    model_holder["model"] = model
    config = TrainerConfig(**{**BASE.__dict__, "epochs": 6, "patience": 2})
    history = Trainer(model, _data(), config, validation=validation).run()
    assert history.stopped_early and len(history.epochs) == 4  # 0.6 and 0.4 do not beat 0.7
    assert history.best_epoch == 2 and history.best_metric == 0.7
    assert torch.equal(model.linear.weight, snapshots[1])


@pytest.mark.parametrize("optimizer", ["adamw", "adagrad"])
def test_optimizers(optimizer: str) -> None:
    _, trainer = _train(TrainerConfig(**{**BASE.__dict__, "optimizer": optimizer, "learning_rate": 0.1}))
    assert trainer.history.epochs[-1]["loss"] < trainer.history.epochs[0]["loss"]


def test_max_steps_and_mismatched_tensors() -> None:
    _, trainer = _train(TrainerConfig(**{**BASE.__dict__, "max_steps": 5}))
    assert trainer.step == 5
    with pytest.raises(TowersInputError, match="same number of rows"):
        Trainer(LinearRegression(), {"x": torch.zeros(4, 3), "y": torch.zeros(5)}, BASE)


def test_progress_bar_reports_loss_and_rate(capsys) -> None:
    _train(TrainerConfig(**{**BASE.__dict__, "epochs": 1, "progress": True, "log_every": 2}))
    err = capsys.readouterr().err
    assert "loss" in err and "ex/s" in err
