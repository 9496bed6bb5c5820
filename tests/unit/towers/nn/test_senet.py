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
