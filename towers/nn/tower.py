"""A tower: feature embeddings -> MLP -> an L2-normalised vector.

A tower embeds each input (categorical: one row of a table; multi_categorical: the masked mean of its rows, or a
transformer sequence encoder when ``encoders.sequences`` names the feature (``towers/nn/sequence.py``); numeric: the
standardised value clipped to +-Z_CLIP and a missing indicator), concatenates them, runs an MLP and L2-normalises
the output. Optional pieces, each exported to ONNX: SENet field gating (``towers/nn/senet.py``) and
DAT augmented vectors (``towers/nn/augmented.py``); training-only: learned defaults for the SSL views' masked fields.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from towers.config import TowerConfig
from towers.errors import TowersConfigError, TowersInputError
from towers.features.encoder import FeatureEncoders, group_of
from towers.features.schema import FeatureSpec
from towers.nn.augmented import AugmentedVectors
from towers.nn.senet import FieldGate
from towers.nn.sequence import sequence_encoders

Z_CLIP = 10.0  # standardised numeric values are clipped to [-Z_CLIP, Z_CLIP] (outliers cannot saturate a tower)


def module_key(name: str) -> str:
    """A feature or group name as a ModuleDict key (no dots)."""
    return name.replace(".", "_")


def unembedded_id(name: str, *, wanted: bool) -> frozenset[str]:
    """The id column as a feature not to embed when ``encoders.use_item_id`` / ``use_user_id`` is false: then it is an
    input only for DAT's augmented vector (whether the schema lists it as a feature or not)."""
    return frozenset() if wanted else frozenset({name})


class Tower(nn.Module):
    """features {name: tensor} -> L2-normalised embeddings [B, D].

    Fields: one per embedded string feature ([B, E]), then one per numeric feature ([B, 2]: the standardised value
    and the missing indicator); ``field_names`` gives the order. Optional pieces, each off unless configured:
    ``field_mask`` [B, F] replaces masked fields by learned defaults (the SSL views; needs ``maskable``), a
    ``FieldGate`` re-weights the fields (SENet), and ``augmented`` appends the DAT vector of the id feature
    ``augmented_id``. The MLP input is [string fields..., standardised values [B, F_num], indicators [B, F_num],
    augmented vector].
    """

    numeric_mean: torch.Tensor
    numeric_std: torch.Tensor

    def __init__(
        self,
        specs: tuple[FeatureSpec, ...],
        *,
        tables: dict[str, nn.Embedding],
        encoders: FeatureEncoders,
        config: TowerConfig,
        skip_embedding: frozenset[str] = frozenset(),
        augmented: AugmentedVectors | None = None,
        augmented_id: str | None = None,
        maskable: bool = False,
    ) -> None:
        super().__init__()
        self.specs = specs
        self.numeric_names = [s.name for s in specs if s.kind == "numeric"]
        self.string_specs = [s for s in specs if s.kind != "numeric" and s.name not in skip_embedding]
        self.tables = nn.ModuleDict({module_key(group_of(s)): tables[group_of(s)] for s in self.string_specs})
        encoders_by_feature = sequence_encoders(
            tuple(self.string_specs), dim=config.towers.embedding_dim, configs=config.encoders.sequences
        )
        self.sequences = nn.ModuleDict({module_key(name): e for name, e in encoders_by_feature.items()})
        stats = [encoders.numeric[name] for name in self.numeric_names]
        self.register_buffer("numeric_mean", torch.tensor([s.mean for s in stats], dtype=torch.float32))  # [F_num]
        self.register_buffer("numeric_std", torch.tensor([s.std for s in stats], dtype=torch.float32))  # [F_num]
        self.field_names = [s.name for s in self.string_specs] + self.numeric_names
        self.field_widths = [
            encoders_by_feature[s.name].width if s.name in encoders_by_feature else config.towers.embedding_dim
            for s in self.string_specs
        ] + [2] * len(self.numeric_names)
        self.augmented = augmented
        self.augmented_id = augmented_id
        self.default_rate = config.dat.default_rate if augmented is not None else 0.0
        width = sum(self.field_widths) + (config.towers.output_dim if augmented is not None else 0)
        if width == 0:
            raise TowersInputError("A tower needs at least one input feature; add features to the schema or use the id columns.")
        self.mask_defaults = (
            nn.ParameterList([nn.Parameter(torch.zeros(w)) for w in self.field_widths]) if maskable else None
        )
        gated = config.towers.senet
        self.gate = FieldGate(len(self.field_names), reduction=config.towers.senet_reduction) if gated else None
        layers: list[nn.Module] = []
        for hidden in config.towers.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if config.towers.dropout > 0:
                layers.append(nn.Dropout(config.towers.dropout))
            width = hidden
        layers.append(nn.Linear(width, config.towers.output_dim))
        self.mlp = nn.Sequential(*layers)

    def string_fields(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        parts: list[torch.Tensor] = []
        for spec in self.string_specs:
            table = self.tables[module_key(group_of(spec))]
            ids = features[spec.name]
            if spec.kind == "categorical":
                parts.append(table(ids))  # [B, E]
            elif module_key(spec.name) in self.sequences:
                parts.append(self.sequences[module_key(spec.name)](ids, table(ids)))  # [B, E]
            else:
                vectors = table(ids)  # [B, L, E]
                mask = (ids != 0).to(vectors.dtype).unsqueeze(-1)  # [B, L, 1]
                count = mask.sum(dim=1).clamp(min=1.0)  # [B, 1]
                parts.append((vectors * mask).sum(dim=1) / count)  # [B, E]
        return parts

    def numeric_blocks(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(standardised values [B, F_num], missing indicators [B, F_num])."""
        raw = torch.stack([features[name].to(torch.float32) for name in self.numeric_names], dim=1)  # [B, F_num]
        missing = ~torch.isfinite(raw)  # [B, F_num]
        scaled = ((raw - self.numeric_mean) / self.numeric_std).clamp(-Z_CLIP, Z_CLIP)  # [B, F_num]
        scaled = torch.where(missing, torch.zeros_like(scaled), scaled)
        return scaled, missing.to(torch.float32)

    def _masked(self, fields: list[torch.Tensor], field_mask: torch.Tensor) -> list[torch.Tensor]:
        if self.mask_defaults is None:
            raise TowersConfigError("This tower was built without mask defaults; build the model with ssl.weight > 0.")
        return [
            torch.where(field_mask[:, f : f + 1], default.to(field.dtype).unsqueeze(0), field)  # [B, w_f]
            for f, (field, default) in enumerate(zip(fields, self.mask_defaults, strict=True))
        ]

    def _masked_blocks(
        self, strings: torch.Tensor, scaled: torch.Tensor | None, missing: torch.Tensor | None, field_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``_masked`` on fields held as blocks: strings [B, F_str, E], numeric values and indicators [B, F_num]."""
        if self.mask_defaults is None:
            raise TowersConfigError("This tower was built without mask defaults; build the model with ssl.weight > 0.")
        count = strings.shape[1]
        defaults = list(self.mask_defaults)
        string_defaults = torch.stack(defaults[:count]).to(strings.dtype)  # [F_str, E]
        strings = torch.where(field_mask[:, :count].unsqueeze(2), string_defaults.unsqueeze(0), strings)
        if scaled is None or missing is None:
            return strings, scaled, missing
        numeric_defaults = torch.stack(defaults[count:]).to(scaled.dtype)  # [F_num, 2]
        hidden = field_mask[:, count:]  # [B, F_num]
        scaled = torch.where(hidden, numeric_defaults[:, 0].unsqueeze(0), scaled)
        missing = torch.where(hidden, numeric_defaults[:, 1].unsqueeze(0), missing)
        return strings, scaled, missing

    def _augmented_vector(self, features: dict[str, torch.Tensor], field_mask: torch.Tensor | None) -> torch.Tensor:
        assert self.augmented is not None and self.augmented_id is not None
        ids = features[self.augmented_id]  # [B]
        use_default = None
        if self.training and self.default_rate > 0:
            use_default = torch.rand(ids.shape, device=ids.device) < self.default_rate  # [B]
        if field_mask is not None:  # an SSL view: the vector goes with its id field (both views when not a field)
            if self.augmented_id in self.field_names:
                hidden = field_mask[:, self.field_names.index(self.augmented_id)]  # [B]
            else:
                hidden = torch.ones_like(ids, dtype=torch.bool)  # [B]
            use_default = hidden if use_default is None else use_default | hidden
        return self.augmented(ids, use_default=use_default)  # [B, D]

    def forward(self, features: dict[str, torch.Tensor], *, field_mask: torch.Tensor | None = None) -> torch.Tensor:
        parts = self.string_fields(features)  # F_str x [B, w_f]
        numeric = list(self.numeric_blocks(features)) if self.numeric_names else []  # 2 x [B, F_num]
        per_field = field_mask is not None or self.gate is not None
        if per_field and parts and len({p.shape[1] for p in parts}) == 1:  # string fields of one width: as blocks
            strings = torch.stack(parts, dim=1)  # [B, F_str, E]
            scaled, missing = (numeric[0], numeric[1]) if numeric else (None, None)
            if field_mask is not None:
                strings, scaled, missing = self._masked_blocks(strings, scaled, missing, field_mask)
            if self.gate is not None:
                strings, scaled, missing = self.gate.gate_blocks(strings, scaled, missing)
            parts = [strings.flatten(1)]  # [B, F_str * E], the fields in order
            numeric = [scaled, missing] if scaled is not None and missing is not None else []
        elif per_field:  # fields of several widths: one at a time, numeric fields as [B, 2] each
            fields = parts + (list(torch.stack(numeric, dim=2).unbind(dim=1)) if numeric else [])  # F x [B, w_f]
            if field_mask is not None:
                fields = self._masked(fields, field_mask)
            if self.gate is not None:
                fields = self.gate(fields)
            count = len(self.string_specs)
            parts = fields[:count]
            if numeric:
                stacked = torch.stack(fields[count:], dim=1)  # [B, F_num, 2]
                numeric = [stacked[:, :, 0], stacked[:, :, 1]]  # 2 x [B, F_num]
        parts = parts + numeric
        if self.augmented is not None:
            parts.append(self._augmented_vector(features, field_mask))  # [B, D]
        hidden = torch.cat([p.to(parts[0].dtype) for p in parts], dim=1)  # [B, width]
        out = self.mlp(hidden)  # [B, D]
        return F.normalize(out.float(), dim=-1)  # [B, D]
