"""The two towers: a query tower and an item tower over shared feature embeddings.

Features of one vocabulary group share one ``nn.Embedding`` across both towers (the item id table also embeds the
query side's recent items). The model is rebuilt from ``TowerConfig`` plus ``FeatureEncoders`` (sizes and statistics).
It only embeds; the retrieval task (candidates, log q, the loss and its auxiliary terms) is
``towers/tasks/retrieval.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from towers.config import TowerConfig
from towers.errors import TowersConfigError
from towers.features.encoder import FeatureEncoders
from towers.features.schema import FeatureSpec
from towers.nn.augmented import AugmentedVectors
from towers.nn.sequence import unmatched_sequences
from towers.nn.tower import Tower, unembedded_id


class TwoTowerModel(nn.Module):
    """batch {name: tensor} -> query embeddings [B, D] and item embeddings [B, D], both L2-normalised."""

    def __init__(self, config: TowerConfig, encoders: FeatureEncoders) -> None:
        super().__init__()
        self.config = config
        schema = encoders.schema
        tables = {
            group: nn.Embedding(vocab.size, config.towers.embedding_dim)
            for group, vocab in encoders.vocabularies.items()
        }
        for table in tables.values():
            nn.init.normal_(table.weight, std=0.1)
        query_specs, item_specs = encoders.specs["query"], encoders.specs["item"]
        unknown = unmatched_sequences(config.encoders.sequences, query_specs + item_specs)
        if unknown:
            lists = [s.name for s in query_specs + item_specs if s.kind == "multi_categorical"]
            raise TowersConfigError(
                f"encoders.sequences names {', '.join(map(repr, unknown))}, which is no multi-valued feature of the "
                f"towers; name one of {lists} (or its part after the last '__')."
            )
        dat = config.dat.enabled
        query_augmented = item_augmented = None
        if dat:
            query_augmented = self._augmented_vectors(encoders, query_specs, schema.user_id)
            item_augmented = self._augmented_vectors(encoders, item_specs, schema.item_id)
        self.query_tower = Tower(
            query_specs, tables=tables, encoders=encoders, config=config,
            skip_embedding=unembedded_id(schema.user_id, wanted=config.encoders.use_user_id),
            augmented=query_augmented, augmented_id=schema.user_id if dat else None,
        )
        self.item_tower = Tower(
            item_specs, tables=tables, encoders=encoders, config=config,
            skip_embedding=unembedded_id(schema.item_id, wanted=config.encoders.use_item_id),
            augmented=item_augmented, augmented_id=schema.item_id if dat else None,
            maskable=config.ssl.enabled,
        )
        self.query_names = [s.name for s in query_specs]
        self.item_names = [s.name for s in item_specs]
        self.user_id, self.item_id, self.item_category = schema.user_id, schema.item_id, schema.item_category
        self.item_kinds = {s.name: s.kind for s in item_specs}

    def _augmented_vectors(
        self, encoders: FeatureEncoders, specs: tuple[FeatureSpec, ...], name: str
    ) -> AugmentedVectors:
        spec = next((s for s in specs if s.name == name), None)
        if spec is None or spec.kind != "categorical":
            raise TowersConfigError(
                f"DAT needs the id column {name!r} as a categorical tower input; check the FeatureSchema."
            )
        vocab = encoders.vocabulary(spec)
        return AugmentedVectors(
            vocab.size,
            self.config.towers.output_dim,
            first_token_id=vocab.first_token_id,
            learned_default=self.config.dat.unseen == "learned",
        )

    def embed_queries(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.query_tower({n: batch[n] for n in self.query_names})  # [B, D]

    def embed_items(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.item_tower({n: batch[n] for n in self.item_names})  # [B, D]
