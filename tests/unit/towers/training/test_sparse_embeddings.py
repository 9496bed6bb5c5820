"""Row-sparse embedding updates (``training.sparse_embeddings``): the same first step as dense AdamW without weight
decay, one global clipping norm, checkpoints that resume, and two towers that train and export with parity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synthetic_interactions import corpus_table, feature_schema, training_table
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.config import TowerConfig
from towers.training import fit_two_tower
from towers.training.sparse import SplitOptimizer, clip_grad_norm
from towers.training.trainer import Trainer, TrainerConfig


class Lookup(nn.Module):
    """ids -> an embedding table -> a linear head; regression on a target per row."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(50, 4)
        self.head = nn.Linear(4, 1)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        vectors = self.table(batch["ids"]).mean(dim=1)  # [B, 4]: two lookups per row, some rows repeated
        loss = ((self.head(vectors).squeeze(1) - batch["y"]) ** 2).mean()
        return loss, {"loss": loss.detach()}


def _data() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"ids": torch.randint(0, 50, (64, 2), generator=generator), "y": torch.randn(64, generator=generator)}


def _trained(config: TrainerConfig) -> Lookup:
    torch.manual_seed(0)
    model = Lookup()
    Trainer(model, _data(), config).run()
    return model


def test_first_step_equals_dense_adamw_without_weight_decay_and_untouched_rows_stay():
    # Adam's first step is lr * g / (|g| + eps') per entry for both optimizers (eps' = eps for AdamW and
    # eps / sqrt(1 - beta2) = 3.2e-7 for SparseAdam, which adds eps before the bias correction), so the two steps
    # agree to a small share of lr = 3e-3 wherever |g| >> 3e-7: within 1% of lr (a step without bias correction would
    # be 3x lr off); rows no batch looks up have g = 0 and stay put in both.
    base = dict(epochs=1, batch_size=64, max_steps=1, weight_decay=0.0, grad_clip=None, progress=False, device="cpu")
    dense = _trained(TrainerConfig(**base))
    sparse = _trained(TrainerConfig(**base, sparse_embeddings=True))
    torch.testing.assert_close(sparse.table.weight, dense.table.weight, rtol=0, atol=3e-5)
    torch.testing.assert_close(sparse.head.weight, dense.head.weight, rtol=0, atol=1e-7)  # both AdamW
    torch.manual_seed(0)
    initial = Lookup().table.weight
    untouched = sorted(set(range(50)) - set(_data()["ids"].flatten().tolist()))
    assert untouched  # 128 draws from 50 ids leave some out
    torch.testing.assert_close(sparse.table.weight[untouched], initial[untouched], rtol=0, atol=0)
    assert sparse.table.sparse  # the optimizer asked the table for row-sparse gradients


def test_clip_grad_norm_over_sparse_gradients_matches_the_dense_clip():
    torch.manual_seed(1)
    twins = [Lookup(), Lookup()]
    twins[1].load_state_dict(twins[0].state_dict())
    twins[1].table.sparse = True
    batch = _data()
    for model in twins:
        model.loss(batch)[0].backward()
    assert twins[1].table.weight.grad.is_sparse and not twins[0].table.weight.grad.is_sparse
    expected = torch.nn.utils.clip_grad_norm_(twins[0].parameters(), 0.01)
    measured = clip_grad_norm(twins[1].parameters(), 0.01)
    torch.testing.assert_close(measured, expected)
    torch.testing.assert_close(twins[1].table.weight.grad.to_dense(), twins[0].table.weight.grad)
    torch.testing.assert_close(twins[1].head.weight.grad, twins[0].head.weight.grad)


def test_split_optimizer_state_resumes_from_a_checkpoint(tmp_path):
    config = TrainerConfig(epochs=2, batch_size=16, progress=False, device="cpu", sparse_embeddings=True)
    straight = _trained(config)
    torch.manual_seed(0)
    model = Lookup()
    first = Trainer(model, _data(), TrainerConfig(**{**config.__dict__, "epochs": 1}),
                    checkpoint_path=tmp_path / "c.pt")
    first.run()
    assert isinstance(first.optimizer, SplitOptimizer)
    resumed_model = Lookup()
    Trainer(resumed_model, _data(), config, checkpoint_path=tmp_path / "c.pt").run()  # epoch 2 from the checkpoint
    torch.testing.assert_close(resumed_model.table.weight, straight.table.weight)


@pytest.mark.parametrize("optimizer", ["adamw", "adagrad"])
def test_two_towers_train_with_sparse_embeddings_and_export_with_parity(tmp_path, optimizer):
    config = TowerConfig().with_overrides({"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "epochs": 2,
                                           "batch_size": 128, "sparse_embeddings": True, "optimizer": optimizer})
    train, corpus = training_table(n_users=60, per_user=10), corpus_table()
    towers = fit_two_tower(train, corpus=corpus, schema=feature_schema(), config=config, progress=False)
    losses = [epoch["loss"] for epoch in towers.history.epochs]
    assert len(losses) == 2 and losses[1] < losses[0]
    result = towers.export(tmp_path, model_name="movies", model_version=1, feature_service="fs",
                           sample=train.slice(0, 64), item_sample=corpus.slice(0, 64))
    assert result.max_abs_diff <= 1e-5
