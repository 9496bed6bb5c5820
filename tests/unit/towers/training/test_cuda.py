"""Training on a GPU with bf16 autocast (skipped without CUDA): the full loss trains, every tensor of the towers and
their task lives on the device, the towers run in bf16, a trainer step never waits for the device, the ONNX export of
a GPU-trained model keeps its parity, a checkpoint resumes the GPU's random stream, and with two GPUs two NCCL ranks
equal one GPU on the concatenated batch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from distributed_steps import MAIN, WORLD, check_main_equivalence, nccl_worker, run_ranks
from synthetic_interactions import corpus_table, feature_schema, trainable_towers, training_table
from towers.config import TowerConfig, TrainerConfig
from towers.training import Trainer, fit_two_tower

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# corrected softmax + mixed negatives + queue + SSL (RFM) + DAT mimic + Category Alignment
FULL = {"embedding_dim": 16, "hidden_dims": [32], "output_dim": 16, "batch_size": 64, "uniform_negatives": 32,
        "queue_size": 64, "ssl.weight": 1.0, "ssl.sample_size": 32, "dat.enabled": True, "category_weight": 1.0,
        "min_category_items": 2, "device": "cuda", "autocast_bf16": True, "epochs": 4, "learning_rate": 1e-2,
        "progress": False}


def test_the_full_loss_trains_on_the_gpu_and_exports_with_parity(tmp_path: Path) -> None:
    config = TowerConfig().with_overrides(FULL)
    train, corpus = training_table(n_users=60, per_user=10), corpus_table()
    towers = fit_two_tower(train, corpus=corpus, schema=feature_schema(), config=config, progress=False)
    tensors = [*towers.model.named_parameters(), *towers.model.named_buffers(), *towers.task.named_buffers()]
    off_device = [name for name, tensor in tensors if tensor.device.type != "cuda"]
    assert not off_device  # estimator arrays, queue, corpus sampler, masking information included
    assert int(towers.task.estimator.step) == towers.history.steps  # updated on the GPU once per step
    assert int((towers.task.queue.keys >= 0).sum()) == towers.task.queue.size
    losses = [epoch["loss"] for epoch in towers.history.epochs]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0], losses
    result = towers.export(tmp_path, model_name="m", model_version=1, feature_service="fs", sample=train.slice(0, 64),
                           item_sample=corpus.slice(0, 64))
    assert result.max_abs_diff <= 1e-5
    assert next(towers.model.parameters()).device.type == "cuda"  # the export put the towers back


def test_the_towers_run_in_bf16_under_autocast_and_the_loss_stays_finite() -> None:
    config = TowerConfig().with_overrides(FULL)
    model, rows = trainable_towers(config)
    trainer = Trainer(model, rows, config.training)
    dtypes: list[torch.dtype] = []
    first_layer = model.model.query_tower.mlp[0]
    handle = first_layer.register_forward_hook(lambda _m, _i, output: dtypes.append(output.dtype))
    try:
        loss = trainer.train_step(trainer.batch(trainer.batch_index(trainer.permutation(0), 0)), use_autocast=True)
    finally:
        handle.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert loss.device.type == "cuda" and math.isfinite(float(loss))
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())


class _Regression(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = (self.mlp(batch["x"]).squeeze(1).float() - batch["y"]).pow(2).mean()
        return loss, {"loss": loss.detach()}


def test_a_trainer_step_never_synchronises_the_host() -> None:
    generator = torch.Generator().manual_seed(0)
    data = {"x": torch.randn(512, 8, generator=generator), "y": torch.randn(512, generator=generator)}
    trainer = Trainer(_Regression(), data, TrainerConfig(device="cuda", batch_size=64, progress=False))
    permutation = trainer.permutation(0)  # one host-to-device copy per epoch, outside the steps
    batches = [trainer.batch(trainer.batch_index(permutation, b)) for b in range(4)]
    trainer.train_step(batches[0], use_autocast=True)  # first step: lazy CUDA and optimizer state set-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call (.item(), a blocking copy) raises
    try:
        losses = [trainer.train_step(batch, use_autocast=True) for batch in batches[1:]]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(math.isfinite(float(loss)) for loss in losses)


def test_a_checkpoint_resumes_the_gpu_random_stream(tmp_path: Path) -> None:
    # no queue (it is not part of a checkpoint) and no SSL/DAT: the uniform draws are the GPU's random stream
    config = TowerConfig().with_overrides({**FULL, "epochs": 2, "queue_size": 0, "ssl.weight": 0.0,
                                           "dat.enabled": False})

    def run(epochs: int, checkpoint: Path | None) -> dict[str, torch.Tensor]:
        model, rows = trainable_towers(config)
        torch.manual_seed(config.training.seed)
        Trainer(model, rows, config.with_overrides({"epochs": epochs}).training, checkpoint_path=checkpoint).run()
        return model.state_dict()

    uninterrupted = run(2, None)
    run(1, tmp_path / "checkpoint.pt")
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["cuda_rng"] is not None
    resumed = run(2, tmp_path / "checkpoint.pt")
    for key, value in uninterrupted.items():  # the second epoch's uniform draws came from the same GPU stream
        assert torch.allclose(resumed[key].float(), value.float(), atol=1e-4), key


@pytest.mark.skipif(torch.cuda.device_count() < WORLD, reason="needs two CUDA devices")
@pytest.mark.timeout(600)
def test_two_nccl_ranks_equal_one_gpu_on_the_concatenated_batch(tmp_path: Path) -> None:
    run_ranks(nccl_worker, world_size=WORLD, out_dir=tmp_path)
    records = [torch.load(tmp_path / f"main-rank{k}.pt", weights_only=False) for k in range(WORLD)]
    check_main_equivalence(records, {**MAIN, "device": "cuda"}, tolerance=1e-4)
