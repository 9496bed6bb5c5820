"""Dual Augmented Two-tower: augmented vectors, stop-gradient mimic losses, the Category Alignment Loss, ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from synthetic_interactions import corpus_table, feature_schema, training_table
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.training import fit_two_tower, item_key_space, item_keys, with_item_features
from towers.config import TowerConfig
from towers.losses.dat import category_alignment_loss
from towers.nn.augmented import AugmentedVectors
from towers.features.encoder import FeatureEncoders
from towers.onnx import load_onnx_tower, table_to_onnx_inputs
from towers.losses import sampled_binary_cross_entropy
from towers.features.schema import ITEM_KEY
from towers.errors import TowersConfigError
from towers.tasks import CategoryAlignmentLoss, MimicLoss
from towers.training import TrainableTowers

DAT = TowerConfig().with_overrides({"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "batch_size": 64,
                                    "dat.enabled": True, "category_weight": 1.0, "min_category_items": 2})


def _model(config: TowerConfig = DAT) -> tuple[TrainableTowers, dict[str, torch.Tensor]]:
    schema, corpus = feature_schema(), corpus_table()
    train = with_item_features(training_table(n_users=20, per_user=5), corpus, schema=schema, config=config)
    encoders = FeatureEncoders.fit(train, schema=schema, config=config)
    torch.manual_seed(0)
    model = TrainableTowers.build(config, encoders)
    arrays = {**encoders.encode(train, "query"), **encoders.encode(train, "item")}
    batch = {n: torch.from_numpy(a) for n, a in arrays.items()}
    space = item_key_space(train, corpus, item_id="item_id")
    batch[ITEM_KEY] = torch.from_numpy(item_keys(train, space, item_id="item_id"))
    return model, batch


def test_user_id_feeds_only_the_augmented_vector_when_not_asked_for() -> None:
    model = _model()[0].model
    assert "user_id" in model.query_names and "user_id" not in model.query_tower.field_names
    assert "item_id" in model.item_tower.field_names  # use_item_id=True: embedded and augmented


def test_mimic_loss_moves_augmented_vectors_and_not_the_towers() -> None:
    trainable, batch = _model()
    model = trainable.model
    queries, items = model.embed_queries(batch), model.embed_items(batch)
    terms = MimicLoss(DAT).terms(model, batch, queries=queries, items=items, corpus=None)
    (terms["mimic_query"][1] + terms["mimic_item"][1]).backward()
    augmented = [model.query_tower.augmented, model.item_tower.augmented]
    assert all(a is not None and a.table.weight.grad is not None and a.table.weight.grad.abs().sum() > 0
               for a in augmented)
    tower_weights = [p for n, p in model.named_parameters() if ".augmented." not in n]
    assert tower_weights and all(p.grad is None or p.grad.abs().sum() == 0 for p in tower_weights)


def test_unseen_ids_get_zero_or_learned_default() -> None:
    vectors = AugmentedVectors(10, 4, first_token_id=2, learned_default=False)
    out = vectors(torch.tensor([0, 1, 5]))  # missing, OOV, known
    assert torch.equal(out[:2], torch.zeros(2, 4)) and out[2].abs().sum() > 0
    learned = AugmentedVectors(10, 4, first_token_id=2, learned_default=True)
    with torch.no_grad():
        learned.default.fill_(0.5)  # type: ignore[union-attr]
    out = learned(torch.tensor([1, 5, 5]), use_default=torch.tensor([False, False, True]))
    assert torch.equal(out[0], torch.full((4,), 0.5)) and torch.equal(out[2], torch.full((4,), 0.5))
    assert not torch.equal(out[1], torch.full((4,), 0.5))


def test_category_alignment_is_zero_for_equal_covariances_and_positive_otherwise() -> None:
    generator = torch.Generator().manual_seed(0)
    shape = torch.randn(6, 3, generator=generator)  # [6, D]
    # category 1 and category 2 hold the same points up to a shift: equal covariances, so L_CA = 0
    equal = torch.cat([shape, shape + torch.tensor([1.0, -2.0, 0.5])])  # [12, D]
    categories = torch.tensor([1] * 6 + [2] * 6)
    # (computed from a Gram matrix in float32: equal covariances leave ~1e-7 of ||C||^2 ~ 10, not exactly 0)
    assert category_alignment_loss(equal, categories, min_items=2).item() == pytest.approx(0.0, abs=1e-5)
    # scaling category 2 by 2 multiplies its covariance by 4: L_CA = ||C - 4C||_F^2 = 9 ||C||_F^2
    scaled = torch.cat([shape, 2.0 * shape])
    covariance = torch.cov(shape.T)  # [D, D]
    expected = 9.0 * covariance.pow(2).sum()
    assert category_alignment_loss(scaled, categories, min_items=2).item() == pytest.approx(expected.item(), rel=1e-5)
    # a third category below min_items is left out; missing categories (id 0) never count
    extra = torch.cat([scaled, torch.randn(2, 3, generator=generator), torch.randn(3, 3, generator=generator)])
    more = torch.cat([categories, torch.tensor([3, 3, 0, 0, 0])])
    assert category_alignment_loss(extra, more, min_items=3).item() == pytest.approx(expected.item(), rel=1e-5)


def test_category_alignment_gradient_reaches_the_item_tower() -> None:
    trainable, batch = _model()
    model = trainable.model
    items = model.embed_items(batch)
    alignment = CategoryAlignmentLoss(DAT, model)
    weight, loss = alignment.terms(model, batch, queries=model.embed_queries(batch), items=items, corpus=None)[
        "category_alignment"
    ]
    assert weight == 1.0
    assert loss > 0
    loss.backward()
    first_layer = model.item_tower.mlp[0].weight
    assert first_layer.grad is not None and first_layer.grad.abs().sum() > 0


def test_bce_leaves_out_the_rows_own_positive() -> None:
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    negatives = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # negative 0 is item 10 (row 0's positive), 1 is item 11
    loss = sampled_binary_cross_entropy(queries, positives, negatives, temperature=1.0,
                                        positive_ids=torch.tensor([10, 11]), negative_ids=torch.tensor([10, 11]))
    # each row: softplus(-1) for its positive + softplus(0) for the other row's item (its own copy is left out)
    expected = torch.nn.functional.softplus(torch.tensor(-1.0)) + torch.nn.functional.softplus(torch.tensor(0.0))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_bce_main_loss_trains_with_dat() -> None:
    config = DAT.with_overrides({"loss.function": "bce", "bce_negatives": 4})
    model, batch = _model(config)
    model.attach_corpus({n: batch[n] for n in model.model.item_names}, batch[ITEM_KEY])  # the batch's items as corpus
    total, logs = model.loss(batch)
    assert torch.isfinite(total) and set(logs) >= {"main", "mimic_query", "mimic_item", "category_alignment"}
    with pytest.raises(TowersConfigError, match="queue_size"):
        TowerConfig.from_dict({"loss": {"function": "bce", "queue_size": 8}})


def test_dat_with_senet_exports_with_parity_and_unseen_users_get_the_default(tmp_path: Path) -> None:
    config = TowerConfig().with_overrides({"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "epochs": 1,
                                           "batch_size": 128, "dat.enabled": True, "category_weight": 1.0,
                                           "senet": True})
    train, corpus = training_table(n_users=40, per_user=10), corpus_table()
    towers = fit_two_tower(train, corpus=corpus, schema=feature_schema(), config=config, progress=False)
    result = towers.export(tmp_path, model_name="m", model_version=1, feature_service="fs", sample=train.slice(0, 40),
                           item_sample=corpus.slice(0, 40))
    assert result.max_abs_diff <= 1e-5
    query = load_onnx_tower(result.query_path)
    assert "user_id" in {i.name for i in query.info.inputs}
    rows = train.slice(0, 3)
    unseen = rows.set_column(rows.column_names.index("user_id"), "user_id", pa.array(["never-seen", "", "other"]))
    feeds = table_to_onnx_inputs(unseen, towers.encoders.specs["query"])
    out = query.run(feeds)
    missing = rows.set_column(rows.column_names.index("user_id"), "user_id", pa.array([None, None, None], pa.string()))
    assert np.allclose(out, towers.embed_queries(missing), atol=1e-5)  # unseen ids embed like missing ones
    assert not np.allclose(out, towers.embed_queries(rows), atol=1e-3)  # known users carry their augmented vector


def test_category_covariances_are_float32_under_bf16_autocast() -> None:
    from towers.losses.dat import category_covariances

    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(40, 16, generator=generator) * 3 + 10  # large means: bf16 would lose the covariance
    categories = torch.tensor([1] * 20 + [2] * 20)
    expected = category_alignment_loss(embeddings, categories, min_items=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        covariances, _ = category_covariances(embeddings, categories, min_items=2)
        loss = category_alignment_loss(embeddings, categories, min_items=2)
    assert covariances.dtype == torch.float32
    assert torch.allclose(covariances[0], torch.cov(embeddings[:20].T), atol=1e-4)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bce_main_loss_updates_the_frequency_estimator() -> None:
    # the registered frequency_estimator.npz comes from this state; before the fix it stayed all zeros under bce
    config = TowerConfig().with_overrides({"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8,
                                           "loss.function": "bce", "bce_negatives": 4})
    model, batch = _model(config)
    model.attach_corpus({n: batch[n] for n in model.model.item_names}, batch[ITEM_KEY])
    model.loss(batch)
    state = model.task.estimator.state_arrays()
    assert int(state["step"]) == 1 and state["interval"].sum() > 0 and state["last_seen"].max() == 1.0
    model.eval()
    model.loss(batch)  # not while evaluating
    assert int(model.task.estimator.step) == 1


def test_category_alignment_from_the_gram_matrix_equals_the_covariance_form() -> None:
    from towers.losses.dat import category_covariances

    generator = torch.Generator().manual_seed(3)
    embeddings = torch.nn.functional.normalize(torch.randn(300, 16, generator=generator), dim=1).double()
    embeddings[:100] *= 1.5  # category 1 (the major one, 100 rows) is spread wider
    categories = torch.cat([torch.full((100,), 1), torch.randint(2, 9, (190,), generator=generator),
                            torch.zeros(10, dtype=torch.int64)])  # id 0 (missing) never counts
    covariances, rows = category_covariances(embeddings, categories, min_items=5)  # [K, D, D]
    major = covariances[int(rows.argmax())]
    expected = (covariances - major).pow(2).sum()  # sum_k ||C(major) - C(k)||_F^2, straight from the definition
    assert category_alignment_loss(embeddings, categories, min_items=5).item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize("spread", ["many small categories", "two large categories", "large and small categories"])
def test_within_category_terms_agree_on_both_paths(spread: str) -> None:
    # scatter matrices (large categories), padded Gram blocks and the masked Gram matrix must give the same sum
    from towers.losses.dat import _within_category_terms

    generator = torch.Generator().manual_seed(5)
    if spread == "many small categories":
        group = torch.randint(0, 30, (200,), generator=generator)
    elif spread == "two large categories":  # more rows than dimensions: scatter matrices
        group = torch.cat([torch.zeros(120, dtype=torch.int64), torch.ones(80, dtype=torch.int64)])
    else:  # one category above D = 8 rows, the rest below: both paths in one call
        group = torch.cat([torch.full((60,), 3), torch.arange(140) % 25 + 4])
    x = torch.randn(200, 8, generator=generator, dtype=torch.float64)
    weight = torch.rand(30, generator=generator, dtype=torch.float64) + 0.5
    by_hand = sum(weight[k] ** 2 * ((x[group == k] @ x[group == k].T) ** 2).sum() for k in range(30))
    assert _within_category_terms(x, group, weight, categories=30).item() == pytest.approx(by_hand.item(), rel=1e-9)
