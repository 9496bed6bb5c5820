"""SENet field gating: gates in (0, 1) per field, a closed gate silences its field, the tower keeps unit outputs."""

from __future__ import annotations

import torch
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.config import TowerConfig
from towers.nn.senet import FieldGate


def test_gates_are_per_field_and_scale_each_field() -> None:
    gate = FieldGate(3, reduction=2)
    fields = [torch.randn(5, 4), torch.randn(5, 2), torch.randn(5, 4)]
    weights = gate.weights(fields)
    assert weights.shape == (5, 3) and ((weights > 0) & (weights < 1)).all()
    out = gate(fields)
    for f, (before, after) in enumerate(zip(fields, out, strict=True)):
        assert torch.allclose(after, before * weights[:, f : f + 1])


def test_a_closed_gate_silences_its_field_in_the_tower() -> None:
    from synthetic_interactions import trainable_towers

    config = TowerConfig().with_overrides({"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "senet": True})
    trainable, batch = trainable_towers(config)
    model = trainable.model
    tower = model.item_tower
    assert tower.gate is not None and model.query_tower.gate is not None
    last = tower.gate.excitation[2]
    field = tower.field_names.index("movie__year")
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(5.0)
        last.bias[field] = -60.0  # sigmoid(-60) ~ 1e-26: the year field is gated off
        features = {n: batch[n] for n in model.item_names}
        changed = dict(features, movie__year=features["movie__year"] + 50.0)
        assert torch.allclose(tower(features), tower(changed), atol=1e-6)
        last.bias[field] = 5.0  # open again: the year matters
        assert not torch.allclose(tower(features), tower(changed), atol=1e-4)
        assert torch.allclose(tower(features).norm(dim=1), torch.ones(batch["movie__year"].shape[0]), atol=1e-5)


def test_gating_fields_as_blocks_equals_gating_them_one_by_one() -> None:
    gate = FieldGate(5, reduction=2)
    generator = torch.Generator().manual_seed(0)
    strings = torch.randn(6, 3, 4, generator=generator)  # 3 string fields of width 4
    scaled, missing = torch.randn(6, 2, generator=generator), (torch.rand(6, 2, generator=generator) > 0.5).float()
    fields = list(strings.unbind(1)) + list(torch.stack([scaled, missing], dim=2).unbind(1))  # numeric: [B, 2] each
    one_by_one = gate(fields)
    blocks, gated_scaled, gated_missing = gate.gate_blocks(strings, scaled, missing)
    assert torch.allclose(blocks, torch.stack(one_by_one[:3], dim=1), atol=1e-6)
    assert torch.allclose(torch.stack([gated_scaled, gated_missing], dim=2), torch.stack(one_by_one[3:], dim=1),
                          atol=1e-6)


def test_tower_output_is_the_same_with_fields_as_blocks_or_one_by_one() -> None:
    from synthetic_interactions import trainable_towers

    config = TowerConfig().with_overrides({"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "senet": True,
                                           "ssl.weight": 1.0})
    trainable, batch = trainable_towers(config)
    tower = trainable.model.item_tower
    features = {n: batch[n] for n in trainable.model.item_names}
    mask = torch.rand(batch["movie__year"].shape[0], len(tower.field_names)) > 0.5
    with torch.no_grad():
        for p in tower.mask_defaults:
            p.normal_()
        blocks = tower(features, field_mask=mask)
        parts = tower.string_fields(features)
        numeric = torch.stack(tower.numeric_blocks(features), dim=2).unbind(1)
        fields = tower.gate(tower._masked(parts + list(numeric), mask))
        count = len(parts)
        stacked = torch.stack(fields[count:], dim=1)
        hidden = torch.cat(fields[:count] + [stacked[:, :, 0], stacked[:, :, 1]], dim=1)
        expected = torch.nn.functional.normalize(tower.mlp(hidden), dim=-1)
    assert torch.allclose(blocks, expected, atol=1e-6)
