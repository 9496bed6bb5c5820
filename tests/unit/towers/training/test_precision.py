"""bfloat16 autocast on a CPU as training.cpu_autocast says (auto: where the CPU multiplies bfloat16 in hardware);
CUDA keeps its own switch; under it the towers run in bfloat16 and the loss and gradients stay float32."""

from __future__ import annotations

import math

import pytest
import torch
from synthetic_interactions import trainable_towers
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.config import TowerConfig, TrainerConfig
from towers.errors import TowersConfigError
from towers.training import Trainer
from towers.training import precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("hardware", [True, False])
def test_cpu_autocast_follows_the_config_and_the_hardware(hardware: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "fast_bfloat16", lambda device: hardware)
    assert precision.autocast_enabled(CPU, TrainerConfig()) is False  # off by default on a CPU
    assert precision.autocast_enabled(CPU, TrainerConfig(cpu_autocast="auto")) is hardware
    assert precision.autocast_enabled(CPU, TrainerConfig(cpu_autocast="bf16")) is True  # asked for on any CPU
    assert precision.autocast_enabled(CUDA, TrainerConfig(autocast_bf16=True)) is True  # CUDA: its own switch
    assert precision.autocast_enabled(CUDA, TrainerConfig(autocast_bf16=False, cpu_autocast="bf16")) is False
    with pytest.raises(TowersConfigError, match="training.cpu_autocast must be one of"):
        TowerConfig.from_dict({"training": {"cpu_autocast": "on"}})


def test_a_cpu_step_under_autocast_runs_the_towers_in_bf16_and_the_full_corpus_loss_in_float32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = TowerConfig().with_overrides({
        "embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "negatives": "full_corpus", "batch_size": 32,
        "dat.enabled": True, "category_weight": 1.0, "min_category_items": 2, "device": "cpu", "progress": False,
        "cpu_autocast": "bf16",
    })
    model, rows = trainable_towers(config)
    trainer = Trainer(model, rows, config.training)
    use_autocast = precision.autocast_enabled(trainer.device, config.training)
    assert use_autocast
    dtypes: list[torch.dtype] = []
    handle = model.model.query_tower.mlp[0].register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    try:
        loss = trainer.train_step(trainer.batch(trainer.batch_index(trainer.permutation(0), 0)),
                                  use_autocast=use_autocast)
    finally:
        handle.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert loss.dtype == torch.float32 and math.isfinite(float(loss))
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and bool(torch.isfinite(g).all()) for g in grads)
