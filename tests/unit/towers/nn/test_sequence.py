"""The transformer sequence encoder of a history feature: masks, order, empty lists, config errors, ONNX parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from synthetic_interactions import RECENT, corpus_table, feature_schema, training_table
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.config import SequenceConfig, TowerConfig
from towers.errors import TowersConfigError
from towers.features.encoder import FeatureEncoders
from towers.nn.model import TwoTowerModel
from towers.nn.sequence import SequenceEncoder
from towers.onnx import load_onnx_tower, table_to_onnx_inputs
from towers.training import fit_two_tower, with_item_features

TINY = TowerConfig().with_overrides({"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "epochs": 1,
                                     "batch_size": 256})


def _encoder(**settings) -> SequenceEncoder:
    torch.manual_seed(0)
    return SequenceEncoder(dim=8, length=5, config=SequenceConfig(**{"dropout": 0.0, **settings}), feature=RECENT).eval()


@pytest.mark.parametrize("pooling", ["last", "attention", "mean"])
def test_padded_positions_do_not_reach_the_output(pooling: str) -> None:
    encoder = _encoder(pooling=pooling, layers=2)
    ids = torch.tensor([[5, 6, 0, 0, 0], [7, 0, 0, 0, 0]])
    vectors = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    other = vectors.clone()
    other[ids == 0] = 100.0  # whatever sits in a padded slot
    with torch.no_grad():
        assert torch.allclose(encoder(ids, vectors), encoder(ids, other), atol=1e-6)


def test_order_matters_and_last_pooling_follows_the_most_recent_item() -> None:
    encoder = _encoder(pooling="last", layers=1)
    vectors = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(2))
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    reversed_vectors = vectors.flip(1)
    with torch.no_grad():
        forward, backward = encoder(ids, vectors), encoder(ids, reversed_vectors)
    assert not torch.allclose(forward, backward, atol=1e-3)  # the same items in another order: another vector
    # a mean over positions without layers or position embeddings is order-free
    bag = _encoder(pooling="mean", layers=0, positions="none")
    with torch.no_grad():
        assert torch.allclose(bag(ids, vectors), bag(ids, reversed_vectors), atol=1e-6)


def test_empty_history_gives_the_learned_empty_vector_and_no_nan() -> None:
    encoder = _encoder(pooling="attention", layers=1)
    with torch.no_grad():
        encoder.empty.fill_(0.25)
    encoder.train()
    ids = torch.tensor([[0, 0, 0, 0, 0], [4, 0, 0, 0, 0]])
    vectors = torch.randn(2, 5, 8, requires_grad=True)
    out = encoder(ids, vectors)
    assert torch.isfinite(out).all() and torch.equal(out[0], torch.full((8,), 0.25))
    out.sum().backward()
    assert vectors.grad is not None and torch.isfinite(vectors.grad).all()
    assert encoder.empty.grad is not None and encoder.empty.grad.abs().sum() > 0


def test_bad_sequence_settings_are_named() -> None:
    schema = feature_schema()
    train = with_item_features(training_table(n_users=10, per_user=4), corpus_table(), schema=schema, config=TINY)
    encoders = FeatureEncoders.fit(train, schema=schema, config=TINY)
    with pytest.raises(TowersConfigError, match="names 'recent_itemz', which is no multi-valued feature"):
        TwoTowerModel(TINY.with_overrides({"encoders.sequences": {"recent_itemz": {}}}), encoders)
    with pytest.raises(TowersConfigError, match="3 heads, which do not divide its width 8"):
        TwoTowerModel(TINY.with_overrides({"encoders.sequences": {"recent_items": {"heads": 3}}}), encoders)
    with pytest.raises(TowersConfigError, match="encoders.sequences.recent_items.pooling must be one of"):
        TowerConfig.from_dict({"encoders": {"sequences": {"recent_items": {"pooling": "max"}}}})
    model = TwoTowerModel(TINY.with_overrides({"encoders.sequences": {RECENT: {"layers": 2}}}), encoders)
    assert len(model.query_tower.sequences[RECENT].layers) == 2  # the full feature name works too


def _histories(train: pa.Table, tokens: list[str]) -> pa.Table:
    """Rows with empty, null, one-item, full, over-long and unknown-item histories."""
    rows = train.slice(0, 6)
    lists = pa.array([[], None, [tokens[0]], tokens[:8], tokens[:20], ["never-seen", tokens[1]]], pa.list_(pa.string()))
    return rows.set_column(rows.column_names.index(RECENT), RECENT, lists)


@pytest.mark.parametrize("pooling", ["last", "attention", "mean"])
def test_exports_with_parity_on_padded_empty_and_full_histories(pooling: str, tmp_path: Path) -> None:
    config = TINY.with_overrides({"encoders.sequences": {"recent_items": {"pooling": pooling, "layers": 2}}})
    train, corpus = training_table(n_users=40, per_user=10), corpus_table()
    towers = fit_two_tower(train, corpus=corpus, schema=feature_schema(), config=config, progress=False)
    tokens = towers.encoders.vocabularies["item_id"].tokens
    sample = pa.concat_tables([train.slice(0, 40), _histories(train, tokens)])
    result = towers.export(tmp_path, model_name="m", model_version=1, feature_service="fs", sample=sample,
                           item_sample=corpus.slice(0, 40))
    assert result.max_abs_diff <= 1e-5
    query = load_onnx_tower(result.query_path)
    histories = _histories(train, tokens)
    out = query.run(table_to_onnx_inputs(histories, towers.encoders.specs["query"]))  # the graph looks the ids up
    expected = towers.embed_queries(histories)
    assert np.abs(out - expected).max() <= 1e-5
    assert not np.allclose(out[0], out[2], atol=1e-3)  # an empty and a one-item history differ


def test_width_and_length_shrink_the_encoder_and_still_export_with_parity(tmp_path: Path) -> None:
    encoder = _encoder(pooling="last", layers=1, width=4, heads=2, length=3)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    vectors = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(4))
    changed = vectors.clone()
    changed[:, 3:] += 5.0  # slots beyond the first three are never read
    with torch.no_grad():
        out = encoder(ids, vectors)
        assert out.shape == (1, 4) and torch.allclose(out, encoder(ids, changed), atol=1e-6)
    assert encoder.positions is not None and encoder.positions.shape == (3, 4)
    config = TINY.with_overrides({"encoders.sequences": {"recent_items": {"width": 4, "heads": 2, "length": 3}}})
    train, corpus = training_table(n_users=40, per_user=10), corpus_table()
    towers = fit_two_tower(train, corpus=corpus, schema=feature_schema(), config=config, progress=False)
    assert towers.model.query_tower.field_widths[0] == 4
    tokens = towers.encoders.vocabularies["item_id"].tokens
    sample = pa.concat_tables([train.slice(0, 20), _histories(train, tokens)])
    result = towers.export(tmp_path, model_name="m", model_version=1, feature_service="fs", sample=sample,
                           item_sample=corpus.slice(0, 20))
    assert result.max_abs_diff <= 1e-5


@pytest.mark.parametrize("layers", [1, 2])
def test_last_pooling_computes_only_position_zero_in_the_last_layer_with_the_same_output(layers: int) -> None:
    encoder = _encoder(pooling="last", layers=layers).double()  # float64: the two orders of sums agree to ~1e-16
    ids = torch.tensor([[5, 6, 7, 0, 0], [7, 0, 0, 0, 0], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]])
    vectors = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64, requires_grad=True)

    def every_position(v: torch.Tensor) -> torch.Tensor:  # the layers over every position, position 0 read at the end
        attend = (ids != 0) | ((ids == 0).all(dim=1, keepdim=True) & (torch.arange(5) == 0))
        bias = torch.where(attend, 0.0, float("-inf")).double()[:, None, None, :]
        x = v + encoder.positions.unsqueeze(0)
        for layer in encoder.layers:
            x = layer(x, bias)
        out = encoder.norm(x)[:, 0]
        return torch.where((ids == 0).all(dim=1, keepdim=True), encoder.empty.unsqueeze(0), out)

    fast, full = encoder(ids, vectors), every_position(vectors)
    assert torch.allclose(fast, full, atol=1e-12)
    (fast_grad,) = torch.autograd.grad(fast.square().sum(), vectors)
    (full_grad,) = torch.autograd.grad(full.square().sum(), vectors)
    assert torch.allclose(fast_grad, full_grad, rtol=1e-9, atol=1e-15) and fast_grad.abs().max() > 0
    x = torch.randn(4, 5, 8, dtype=torch.float64)
    bias = torch.zeros(4, 1, 1, 5, dtype=torch.float64)
    assert encoder.layers[-1](x, bias, first_only=True).shape == (4, 1, 8)  # the last layer's output is position 0 alone
