"""Towers and the two-tower model: shapes, unit norms, shared tables, overfitting, the facade, import isolation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch
from synthetic_interactions import corpus_table, feature_schema, training_table
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.training import TrainedTowers, fit_two_tower, with_item_features
from towers.config import TowerConfig
from towers.features.encoder import FeatureEncoders
from towers.onnx import unusual_rows
from towers.features.schema import ITEM_KEY
from towers.nn.model import TwoTowerModel
from towers.errors import MissingColumnError, TowersArtifactError, TowersConfigError
from towers.training import TrainableTowers
from towers.features.schema import FeatureSchema
from towers.training.trainer import Trainer, TrainerConfig

TINY = TowerConfig().with_overrides({"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "epochs": 2, "batch_size": 128})


def _model(config: TowerConfig = TINY) -> tuple[TwoTowerModel, FeatureEncoders, pa.Table]:
    schema = feature_schema()
    train = with_item_features(training_table(n_users=40, per_user=10), corpus_table(), schema=schema, config=config)
    encoders = FeatureEncoders.fit(train, schema=schema, config=config)
    return TwoTowerModel(config, encoders), encoders, train


def _tensors(encoders: FeatureEncoders, table: pa.Table, side: str) -> dict[str, torch.Tensor]:
    return {n: torch.from_numpy(a) for n, a in encoders.encode(table, side).items()}


def test_towers_output_unit_vectors_and_share_the_item_table() -> None:
    model, encoders, train = _model()
    q = model.query_tower(_tensors(encoders, train, "query"))
    v = model.item_tower(_tensors(encoders, train, "item"))
    assert q.shape == (train.num_rows, 8) and v.shape == (train.num_rows, 8)
    assert torch.allclose(q.norm(dim=1), torch.ones(len(q)), atol=1e-5)
    assert model.query_tower.tables["item_id"] is model.item_tower.tables["item_id"]
    assert sum(p.numel() for p in model.parameters()) < sum(v.numel() for v in model.state_dict().values())


@pytest.mark.parametrize("side", ["query", "item"])
def test_unusual_values_give_finite_unit_vectors(side: str) -> None:
    model, encoders, _ = _model()
    tower = model.query_tower if side == "query" else model.item_tower
    rows = unusual_rows(encoders.specs[side], encoders)  # NaN, inf, unknown ids, empty/null/over-long lists
    out = tower(_tensors(encoders, rows, side))
    assert torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=1), torch.ones(len(out)), atol=1e-5)


def test_tiny_model_overfits_a_tiny_dataset() -> None:
    # 32 users, each with one distinct item: with user ids as input the towers can memorise every pair.
    config = TowerConfig().with_overrides({
        "embedding_dim": 16, "hidden_dims": [32], "output_dim": 16, "use_user_id": True, "loss.temperature": 0.1,
        "sampling_bias_correction": False, "learning_rate": 1e-2,
    })
    users = pa.array([f"u{i}" for i in range(32)])
    items = pa.array([f"i{i}" for i in range(32)])
    train = pa.table({"user_id": users, "item_id": items})
    schema = FeatureSchema(query=(), item=())
    encoders = FeatureEncoders.fit(train, schema=schema, config=config)
    torch.manual_seed(0)
    model = TrainableTowers.build(config, encoders)
    tensors = {**_tensors(encoders, train, "query"), **_tensors(encoders, train, "item")}
    tensors[ITEM_KEY] = torch.arange(32)
    first, _ = model.loss(tensors)
    trainer = Trainer(model, tensors, TrainerConfig(epochs=150, batch_size=32, learning_rate=1e-2, progress=False))
    trainer.run()
    last, _ = model.loss(tensors)
    assert first.item() > 3.0  # about log(32) = 3.47 at the start
    assert last.item() < 0.1


def test_fit_embed_save_and_load(tmp_path) -> None:
    schema = feature_schema()
    corpus = corpus_table()
    train = training_table(n_users=60, per_user=10)
    config = TowerConfig().with_overrides(
        {"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "epochs": 2, "batch_size": 128, "uniform_negatives": 16}
    )
    seen: list[int] = []

    def validation(towers: TrainedTowers) -> float:
        vectors = towers.embed_items(corpus)
        seen.append(len(vectors))
        return float(-len(seen))  # gets worse every epoch: the best is epoch 1

    towers = fit_two_tower(train, corpus=corpus, schema=schema, config=config, validation=validation, progress=False)
    assert seen == [300, 300] and towers.history is not None and towers.history.best_epoch == 1
    q, v = towers.embed_queries(train), towers.embed_items(corpus)
    assert q.shape == (600, 8) and v.shape == (300, 8) and q.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    path = towers.save(tmp_path / "towers.pt")
    restored = TrainedTowers.load(path)
    assert np.allclose(restored.embed_queries(train), q, atol=1e-6)
    assert np.allclose(restored.embed_items(corpus), v, atol=1e-6)
    state = towers.estimator_state()
    assert int(state["step"]) > 0 and state["interval"].shape == (config.loss.estimator_hashes, config.loss.estimator_buckets)


def test_missing_query_column_is_named() -> None:
    with pytest.raises(MissingColumnError, match="user_history__recent_items"):
        fit_two_tower(
            training_table(n_users=5).drop_columns(["user_history__recent_items"]),
            corpus=corpus_table(), schema=feature_schema(), config=TINY, progress=False,
        )


def test_config_round_trip() -> None:
    config = TowerConfig().with_overrides({"hidden_dims": [32, 16], "uniform_negatives": 8})
    assert config.towers.hidden_dims == (32, 16) and config.loss.uniform_negatives == 8
    assert TowerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(TowersConfigError, match="no section 'not_a_field'"):
        TowerConfig.from_dict({"not_a_field": 1})
    with pytest.raises(TowersConfigError, match="optimizer"):
        TowerConfig.from_dict({"training": {"optimizer": "sgd"}})


def test_towers_import_no_platform_packages() -> None:
    code = (
        "import sys, towers.training, towers.onnx, towers.evaluation\n"
        "bad = [m for m in ('feast', 'qdrant_client', 'sqlalchemy', 'typer', 'tower_platform') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_loading_an_old_missing_or_damaged_file_names_it(tmp_path) -> None:
    towers = fit_two_tower(training_table(n_users=20, per_user=5), corpus=corpus_table(), schema=feature_schema(),
                           config=TINY.with_overrides({"epochs": 1}), checkpoint_dir=tmp_path / "run", progress=False)
    state = towers.state()
    old = tmp_path / "old.pt"
    torch.save({**state, "format": 1, "config": {"epochs": 1}}, old)  # an export of the flat-config era
    with pytest.raises(TowersArtifactError, match="old.pt have format 1, expected 2; retrain or re-export"):
        TrainedTowers.load(old)
    with pytest.raises(TowersArtifactError, match="nothing.pt do not exist"):
        TrainedTowers.load(tmp_path / "nothing.pt")
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a torch file")
    with pytest.raises(TowersArtifactError, match="damaged.pt cannot be read"):
        TrainedTowers.load(damaged)
    invalid = tmp_path / "invalid.pt"
    torch.save({**state, "config": {"training": {"epochs": 0}}}, invalid)
    with pytest.raises(TowersArtifactError, match="invalid.pt do not rebuild the model .*training.epochs"):
        TrainedTowers.load(invalid)
    # a training checkpoint carries the config and encoders that rebuild the model, and the estimator's state
    restored = TrainedTowers.load(tmp_path / "run" / "checkpoint.pt")
    assert restored.config == towers.config
    rows = training_table(n_users=3, per_user=2)
    assert np.allclose(restored.embed_queries(rows), towers.embed_queries(rows), atol=1e-6)
    assert int(restored.estimator_state()["step"]) == int(towers.estimator_state()["step"]) > 0


def test_use_item_id_false_drops_the_item_id_when_the_schema_carries_it() -> None:
    # the platform's schema lists the item id as an item feature (``item_id`` first, vocab group "item_id"); before
    # the fix use_item_id=False was ignored there and the id was still embedded
    from towers.features.schema import FeatureSpec

    base = feature_schema()
    schema = FeatureSchema(query=base.query, item=(FeatureSpec("item_id", "item", "categorical", vocab_group="item_id"),
                                                   *base.item), item_category=base.item_category)
    config = TINY.with_overrides({"use_item_id": False})
    train = with_item_features(training_table(n_users=20, per_user=5), corpus_table(), schema=schema, config=config)
    encoders = FeatureEncoders.fit(train, schema=schema, config=config)
    model = TwoTowerModel(config, encoders)
    assert "item_id" not in model.item_tower.field_names and "item_id" not in model.item_names
    assert "item_id" in encoders.vocabularies  # the recent items still use the item-id table
    with_id = TwoTowerModel(TINY, FeatureEncoders.fit(train, schema=schema, config=TINY))
    assert with_id.item_tower.field_names[0] == "item_id"
    # with DAT the id stays an input (its augmented vector) but is not embedded as a field
    dat = config.with_overrides({"dat.enabled": True})
    dat_model = TwoTowerModel(dat, FeatureEncoders.fit(train, schema=schema, config=dat))
    assert "item_id" in dat_model.item_names and "item_id" not in dat_model.item_tower.field_names
