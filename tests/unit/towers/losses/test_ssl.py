"""Self-supervised feature masking: mutual information, RFM/CFM masks, value dropout, the InfoNCE of two views."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from synthetic_interactions import ITEM_GENRES, trainable_towers
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.training import item_key_space, item_keys, with_item_features
from towers.losses.masking import (
    correlated_feature_masks,
    discretised_numeric,
    drop_multi_values,
    field_codes,
    mutual_information,
    pairwise_mutual_information,
    random_feature_masks,
)
from towers.config import TowerConfig
from towers.features.encoder import FeatureEncoders
from towers.features.schema import ITEM_KEY
from towers.errors import TowersConfigError
from towers.tasks import SelfSupervisedLoss
from towers.training import TrainableTowers

TINY = TowerConfig().with_overrides({"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "batch_size": 64,
                                     "ssl.weight": 1.0, "ssl.sample_size": 32})


_model = trainable_towers


def _ssl(trainable: TrainableTowers) -> SelfSupervisedLoss:
    (ssl,) = [a for a in trainable.task.auxiliaries if isinstance(a, SelfSupervisedLoss)]
    return ssl


def _ssl_loss(trainable: TrainableTowers, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    terms = _ssl(trainable).terms(trainable.model, batch, queries=None, items=None, corpus=trainable.task.corpus)
    return terms["ssl"][1]


def test_mutual_information_of_correlated_pair_exceeds_independent_pair() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 8, 5000)
    relabelled = (a * 3 + 1) % 8  # a bijection of a: perfectly correlated, different codes
    independent = rng.integers(0, 8, 5000)
    perfect = mutual_information(a, relabelled)
    # a perfectly dependent pair shares all of a's entropy: MI = H(a) (about log 8 = 2.08 nats for 8 even codes)
    entropy = -np.sum((p := np.bincount(a) / a.size) * np.log(p))
    assert perfect == pytest.approx(entropy, rel=1e-9)
    assert mutual_information(a, independent) < 0.02 < perfect


def test_numeric_features_are_discretised_with_missing_as_its_own_bin() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, np.nan, np.inf])
    codes = discretised_numeric(values, bins=2)
    assert codes.tolist() == [0, 0, 1, 1, 2, 2]  # median 2.5 splits the finite values; NaN and inf share bin 2
    assert field_codes(np.array([[3, 1], [0, 0]]), kind="multi_categorical", bins=2).tolist() == [3, 0]


def test_cfm_masks_the_correlated_group_together() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 6, 3000)
    correlated = [base, (base + 2) % 6, base // 2, base % 3]  # fields 0-3 are functions of one variable
    codes = correlated + [rng.integers(0, 6, 3000) for _ in range(4)]  # fields 4-7 independent
    information = torch.from_numpy(pairwise_mutual_information(codes))  # [8, 8]
    for seed_field in range(8):
        first, second = correlated_feature_masks(information, 4, seed_field=seed_field)
        masked = set(torch.nonzero(first[0]).flatten().tolist())
        assert len(masked) == 4 and seed_field in masked  # half of the 8 fields, the seed among them
        assert torch.equal(first, first[:1].expand_as(first)) and torch.equal(second, ~first)
        if seed_field < 4:
            assert masked == {0, 1, 2, 3}  # the correlated group goes together
    drawn = {
        tuple(correlated_feature_masks(information, 1, generator=torch.Generator().manual_seed(s))[0][0].tolist())
        for s in range(30)
    }
    assert len(drawn) > 1  # the seed field is drawn anew each batch


@pytest.mark.parametrize("masking", ["random", "correlated"])
def test_views_are_complementary_and_differ(masking: str) -> None:
    if masking == "random":
        first, second = random_feature_masks(50, 5, generator=torch.Generator().manual_seed(0))
        assert (first.sum(dim=1) == 2).all()  # floor(5 / 2) per row in view 1
        assert len({tuple(r.tolist()) for r in first}) > 1  # a split of its own per item
    else:
        with pytest.warns(UserWarning, match="seed field alone"):  # the synthetic items have 3 fields
            masking = _ssl(_model(TINY.with_overrides({"ssl.masking": "correlated"}))[0]).masking
        assert masking.information.abs().sum() > 0
        first, second = masking.masks(50)
    assert not (first & second).any()  # never the same field masked in both views
    assert (first | second).all()  # every field masked in one view
    model, batch = _model(TINY)
    model = model.model
    features = {n: batch[n] for n in model.item_names}
    fields = len(model.item_tower.field_names)
    one, two = random_feature_masks(batch[ITEM_KEY].shape[0], fields, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        view_one = model.item_tower(features, field_mask=one)  # [B, D]
        view_two = model.item_tower(features, field_mask=two)  # [B, D]
    assert (view_one - view_two).abs().sum(dim=1).min() > 1e-4  # every item's two views differ


def test_value_dropout_only_removes_values() -> None:
    ids = torch.arange(1, 201).view(20, 10)  # [20, 10], no padding
    dropped = drop_multi_values(ids, rate=0.5, generator=torch.Generator().manual_seed(0))
    kept = dropped != 0
    assert torch.equal(dropped[kept], ids[kept])  # kept values unchanged
    assert 0.3 < (~kept).float().mean() < 0.7


def test_ssl_loss_trains_the_shared_tables_and_mask_defaults() -> None:
    trainable, batch = _model(TINY)
    loss = _ssl_loss(trainable, batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    model = trainable.model
    genre = model.item_tower.tables["genre"]
    assert genre is model.query_tower.tables["genre"]  # one table for both views, both towers and the main task
    assert genre.weight.grad is not None and genre.weight.grad.abs().sum() > 0
    assert model.item_tower.mask_defaults is not None
    assert sum(float(d.grad.abs().sum()) for d in model.item_tower.mask_defaults if d.grad is not None) > 0
    assert all(p.grad is None for p in model.query_tower.mlp.parameters())  # SSL is item-side only


def test_ssl_batch_comes_from_the_corpus_or_the_training_batch() -> None:
    model, batch = _model(TINY)
    total, logs = model.loss(batch)
    assert set(logs) >= {"main", "ssl"} and torch.allclose(total, logs["main"] + 1.0 * logs["ssl"])
    drawn: list[torch.Tensor] = []

    def record(tower: object, features: object, keys: torch.Tensor) -> torch.Tensor:
        drawn.append(keys)
        return torch.zeros(())

    _ssl(model).masking.loss = record  # type: ignore[method-assign]
    _ssl_loss(model, batch)
    corpus_keys = drawn[-1]
    assert corpus_keys.shape == (32,) and not set(corpus_keys.tolist()) <= set(batch[ITEM_KEY].tolist())
    training = TINY.with_overrides({"ssl.sampling": "training"})
    model, batch = _model(training)
    _ssl(model).masking.loss = record  # type: ignore[method-assign]
    _ssl_loss(model, batch)
    assert torch.equal(drawn[-1], batch[ITEM_KEY][:32])
    assert ITEM_GENRES in _ssl(model).masking.multi_valued


def test_ssl_is_off_by_default() -> None:
    config = TowerConfig()
    assert not config.ssl.enabled and not config.dat.enabled and config.loss.queue_size == 0 and not config.towers.senet
    assert config.loss.function == "softmax"
    with pytest.raises(TowersConfigError, match="ssl.masking"):
        TowerConfig.from_dict({"ssl": {"masking": "semantic"}})


def test_cfm_with_three_fields_or_fewer_says_it_masks_the_seed_alone() -> None:
    from towers.losses.masking import FeatureMaskingTask

    # F = 3: floor(3 / 2) = 1 field per view-1 mask, i.e. the seed alone; the information is never used
    with pytest.warns(UserWarning, match="masks the seed field alone"):
        FeatureMaskingTask(fields=3, masking="correlated", temperature=0.1, dropout=0.0, multi_valued=[],
                           information=np.eye(3, dtype=np.float32))
    with pytest.warns(UserWarning, match="masks the seed field alone"):
        _model(TINY.with_overrides({"ssl.masking": "correlated"}))  # the synthetic items have 3 fields
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # four fields: no warning
        FeatureMaskingTask(fields=4, masking="correlated", temperature=0.1, dropout=0.0, multi_valued=[],
                           information=np.eye(4, dtype=np.float32))


def test_cfm_without_information_warns_and_does_not_mask_fixed_fields() -> None:
    from towers.losses.masking import FeatureMaskingTask

    task = FeatureMaskingTask(fields=6, masking="correlated", temperature=0.1, dropout=0.0, multi_valued=[])
    with pytest.warns(UserWarning, match="mutual information was never computed"):
        first, second = task.masks(40)
    assert not (first & second).any() and (first | second).all()
    # before the fix every batch masked fields {seed, 0, 1} by the tie order of an all-zero matrix; now the groups
    # are drawn at random, so over 40 rows more than one group appears
    assert len({tuple(row.tolist()) for row in first}) > 1
