"""Query and item towers over feature embeddings, and the two-tower model that owns the loss.

A tower embeds each input (categorical: one row of a table; multi_categorical: the masked mean of its rows; numeric:
the standardised value clipped to +-10 and a missing indicator), concatenates them, runs an MLP and L2-normalises the output.
Features of one vocabulary group share one ``nn.Embedding`` across both towers (the item id table also embeds the
query side's recent items). The model is rebuilt from ``TowerConfig`` plus ``FeatureEncoders`` (sizes and statistics).

Optional components, all off in the default config: SENet field gating and DAT augmented vectors inside the towers
(both exported to ONNX), and training-only terms of the loss: the SSL feature-masking task
(``towers/augmentation.py``), the DAT mimic and category-alignment losses (``towers/dat.py``), a queue of recent item
embeddings as extra negatives (``towers/queue.py``) and the binary cross-entropy main loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from towers.augmentation import FeatureMaskingTask, field_codes, pairwise_mutual_information
from towers.config import TowerConfig
from towers.dat import AugmentedVectors, category_alignment_loss, mimic_loss
from towers.encoders import FeatureEncoders, group_of
from towers.frequency import StreamingFrequencyEstimator
from towers.losses import in_batch_softmax_loss, mixed_negative_log_q, sampled_binary_cross_entropy
from towers.queue import ItemEmbeddingQueue
from towers.schema import FeatureSpec
from towers.senet import FieldGate

ITEM_KEY = "__item_key__"  # int64 [N]: the item's index in the item-key space (accidental hits, frequency estimate)
WEIGHT = "__weight__"  # float32 [N]: the reward weight r_i of an example
Z_CLIP = 10.0  # standardised numeric values are clipped to [-Z_CLIP, Z_CLIP] (outliers cannot saturate a tower)


def module_key(name: str) -> str:
    """A feature or group name as a ModuleDict key (no dots)."""
    return name.replace(".", "_")


def _added_id(name: str, features: tuple[FeatureSpec, ...], *, wanted: bool) -> frozenset[str]:
    """The id column as a feature not to embed: an input only for DAT's augmented vector (not asked for, not in the
    schema's own features)."""
    return frozenset() if wanted or name in {f.name for f in features} else frozenset({name})


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
        stats = [encoders.numeric[name] for name in self.numeric_names]
        self.register_buffer("numeric_mean", torch.tensor([s.mean for s in stats], dtype=torch.float32))  # [F_num]
        self.register_buffer("numeric_std", torch.tensor([s.std for s in stats], dtype=torch.float32))  # [F_num]
        self.field_names = [s.name for s in self.string_specs] + self.numeric_names
        self.field_widths = [config.embedding_dim] * len(self.string_specs) + [2] * len(self.numeric_names)
        self.augmented = augmented
        self.augmented_id = augmented_id
        self.default_rate = config.dat_default_rate if augmented is not None else 0.0
        width = sum(self.field_widths) + (config.output_dim if augmented is not None else 0)
        if width == 0:
            raise ValueError("a tower needs at least one input feature; add features to the schema or use the id columns")
        self.mask_defaults = (
            nn.ParameterList([nn.Parameter(torch.zeros(w)) for w in self.field_widths]) if maskable else None
        )
        self.gate = FieldGate(len(self.field_names), reduction=config.senet_reduction) if config.senet else None
        layers: list[nn.Module] = []
        for hidden in config.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        layers.append(nn.Linear(width, config.output_dim))
        self.mlp = nn.Sequential(*layers)

    def string_fields(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        parts: list[torch.Tensor] = []
        for spec in self.string_specs:
            table = self.tables[module_key(group_of(spec))]
            ids = features[spec.name]
            if spec.kind == "categorical":
                parts.append(table(ids))  # [B, E]
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
            raise ValueError("this tower was built without mask defaults; build the model with ssl_weight > 0")
        return [
            torch.where(field_mask[:, f : f + 1], default.to(field.dtype).unsqueeze(0), field)  # [B, w_f]
            for f, (field, default) in enumerate(zip(fields, self.mask_defaults, strict=True))
        ]

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
        parts = self.string_fields(features)  # F_str x [B, E]
        numeric = list(self.numeric_blocks(features)) if self.numeric_names else []  # 2 x [B, F_num]
        if field_mask is not None or self.gate is not None:  # per-field work: numeric fields as [B, 2] each
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


class CorpusSampler(nn.Module):
    """Item features of the whole corpus (non-persistent buffers) to draw uniform negatives from."""

    keys: torch.Tensor

    def __init__(self, features: dict[str, torch.Tensor], keys: torch.Tensor) -> None:
        super().__init__()
        self.names = list(features)
        for i, name in enumerate(self.names):
            self.register_buffer(f"feature_{i}", features[name], persistent=False)
        self.register_buffer("keys", keys, persistent=False)  # [C]

    @property
    def size(self) -> int:
        return int(self.keys.shape[0])

    def sample(self, count: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """count uniform draws with replacement -> ({name: [B', ...]}, keys [B'])."""
        index = torch.randint(0, self.size, (count,), device=self.keys.device)  # [B']
        features = {name: getattr(self, f"feature_{i}")[index] for i, name in enumerate(self.names)}
        return features, self.keys[index]


class TwoTowerModel(nn.Module):
    """Both towers, the frequency estimator and the training loss.

    L = L_main + ssl_weight * L_self + lambda1 * L_mimic_u + lambda2 * L_mimic_v + lambda3 * L_CA, where L_main is
    the (corrected) in-batch softmax over the batch's items, uniform corpus items and queued items, or the binary
    cross-entropy with ``bce_negatives`` random items; each extra term is present only when configured.
    """

    def __init__(self, config: TowerConfig, encoders: FeatureEncoders) -> None:
        super().__init__()
        self.config = config
        schema = encoders.schema
        tables = {
            group: nn.Embedding(vocab.size, config.embedding_dim) for group, vocab in encoders.vocabularies.items()
        }
        for table in tables.values():
            nn.init.normal_(table.weight, std=0.1)
        query_specs, item_specs = encoders.specs["query"], encoders.specs["item"]
        query_augmented = item_augmented = None
        if config.dat:
            query_augmented = self._augmented_vectors(encoders, query_specs, schema.user_id)
            item_augmented = self._augmented_vectors(encoders, item_specs, schema.item_id)
        self.query_tower = Tower(
            query_specs, tables=tables, encoders=encoders, config=config,
            skip_embedding=_added_id(schema.user_id, schema.query, wanted=config.use_user_id),
            augmented=query_augmented, augmented_id=schema.user_id if config.dat else None,
        )
        self.item_tower = Tower(
            item_specs, tables=tables, encoders=encoders, config=config,
            skip_embedding=_added_id(schema.item_id, schema.item, wanted=config.use_item_id),
            augmented=item_augmented, augmented_id=schema.item_id if config.dat else None,
            maskable=config.ssl_enabled,
        )
        self.estimator = StreamingFrequencyEstimator(
            buckets=config.estimator_buckets,
            hashes=config.estimator_hashes,
            alpha=config.estimator_alpha,
            seed=config.seed,
        )
        self.query_names = [s.name for s in query_specs]
        self.item_names = [s.name for s in item_specs]
        self.user_id, self.item_id, self.item_category = schema.user_id, schema.item_id, schema.item_category
        self.item_kinds = {s.name: s.kind for s in item_specs}
        if config.dat and config.dat_category_weight > 0 and self.item_category not in self.item_names:
            raise ValueError(
                f"the Category Alignment Loss needs the item category feature {self.item_category!r} as an item-tower "
                "input; set FeatureSchema.item_category or dat_category_weight=0"
            )
        self.corpus: CorpusSampler | None = None
        self.queue = ItemEmbeddingQueue(config.queue_size, config.output_dim) if config.queue_size > 0 else None
        self.ssl_task: FeatureMaskingTask | None = None
        if config.ssl_enabled:
            self.ssl_task = FeatureMaskingTask(
                fields=len(self.item_tower.field_names),
                masking=config.ssl_masking,
                temperature=config.ssl_temperature,
                dropout=config.ssl_dropout,
                multi_valued=[s.name for s in item_specs if s.kind == "multi_categorical"],
            )

    def _augmented_vectors(
        self, encoders: FeatureEncoders, specs: tuple[FeatureSpec, ...], name: str
    ) -> AugmentedVectors:
        spec = next((s for s in specs if s.name == name), None)
        if spec is None or spec.kind != "categorical":
            raise ValueError(f"DAT needs the id column {name!r} as a categorical tower input; check the FeatureSchema")
        vocab = encoders.vocabulary(spec)
        return AugmentedVectors(
            vocab.size,
            self.config.output_dim,
            first_token_id=vocab.first_token_id,
            learned_default=self.config.dat_unseen == "learned",
        )

    def attach_corpus(self, features: dict[str, torch.Tensor], keys: torch.Tensor) -> None:
        """Give the model the corpus: uniform and BCE negatives, the SSL batch, CFM's mutual information."""
        self.corpus = CorpusSampler(features, keys)
        if self.ssl_task is not None and self.config.ssl_masking == "correlated":
            codes = [
                field_codes(features[name].cpu().numpy(), kind=self.item_kinds[name], bins=self.config.ssl_mi_bins)
                for name in self.item_tower.field_names
            ]
            information = torch.from_numpy(pairwise_mutual_information(codes))  # [F, F]
            self.ssl_task.information.copy_(information.to(self.ssl_task.information.device))

    def embed_queries(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.query_tower({n: batch[n] for n in self.query_names})  # [B, D]

    def embed_items(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.item_tower({n: batch[n] for n in self.item_names})  # [B, D]

    def _corpus(self, what: str) -> CorpusSampler:
        if self.corpus is None:
            raise ValueError(f"{what} needs the item corpus; call attach_corpus() before training")
        return self.corpus

    def softmax_loss(self, queries: torch.Tensor, items: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The (corrected) softmax over in-batch, uniform and queued candidates."""
        config = self.config
        keys = batch[ITEM_KEY]  # [B]
        candidates, candidate_keys = items, keys
        log_q = None
        if config.sampling_bias_correction:
            if self.training:
                self.estimator.update(keys)
            log_q = self.estimator.log_probability(keys)  # [B]
        if config.uniform_negatives > 0:
            corpus = self._corpus("uniform_negatives > 0")
            sampled, sampled_keys = corpus.sample(config.uniform_negatives)
            candidates = torch.cat([items, self.item_tower(sampled)])  # [B + B', D]
            candidate_keys = torch.cat([keys, sampled_keys])  # [B + B']
            if log_q is not None:
                log_q = mixed_negative_log_q(log_q, num_uniform=config.uniform_negatives, corpus_size=corpus.size)
        excluded = None
        if self.queue is not None:
            queued_keys = self.queue.keys  # [Q]
            candidates = torch.cat([candidates, self.queue.embeddings.to(candidates.dtype)])  # [N + Q, D]
            candidate_keys = torch.cat([candidate_keys, queued_keys])  # [N + Q]
            allowed = torch.cat(
                [torch.ones(keys.shape[0], candidates.shape[0] - self.queue.size, dtype=torch.bool, device=keys.device),
                 self.queue.negative_mask(keys)], dim=1,
            )  # [B, N + Q]
            excluded = ~allowed
            if log_q is not None:
                queued_log_p = self.estimator.log_probability(queued_keys.clamp(min=0))  # [Q]
                log_q = torch.cat([log_q, self.queue.log_q(queued_log_p, batch_size=int(keys.shape[0]))])  # [N + Q]
        hits = config.remove_accidental_hits
        return in_batch_softmax_loss(
            queries,
            candidates,
            temperature=config.temperature,
            log_q=log_q,
            positive_ids=keys if hits else None,
            candidate_ids=candidate_keys if hits else None,
            weights=batch.get(WEIGHT),
            excluded=excluded,
        )

    def bce_loss(self, queries: torch.Tensor, items: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Binary cross-entropy: the positive pair against ``bce_negatives`` items drawn uniformly from the corpus."""
        sampled, sampled_keys = self._corpus("main_loss='bce'").sample(self.config.bce_negatives)
        negatives = self.item_tower(sampled)  # [S, D]
        return sampled_binary_cross_entropy(
            queries, items, negatives, temperature=self.config.temperature,
            positive_ids=batch[ITEM_KEY], negative_ids=sampled_keys, weights=batch.get(WEIGHT),
        )

    def ssl_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """InfoNCE between two masked views of the SSL batch (corpus-uniform items, or the batch's own items)."""
        assert self.ssl_task is not None
        size = self.config.ssl_batch_size
        if self.config.ssl_sampling == "corpus":
            features, keys = self._corpus("ssl_sampling='corpus'").sample(size)
        else:
            features = {n: batch[n][:size] for n in self.item_names}
            keys = batch[ITEM_KEY][:size]
        return self.ssl_task.loss(self.item_tower, features, keys)

    def dat_losses(
        self, batch: dict[str, torch.Tensor], queries: torch.Tensor, items: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """mimic_query: ||a_u - sg(p_v)||^2, mimic_item: ||a_v - sg(p_u)||^2 (positive pairs: the batch rows), and
        category_alignment when lambda3 > 0."""
        assert self.query_tower.augmented is not None and self.item_tower.augmented is not None
        a_u = self.query_tower.augmented(batch[self.user_id])  # [B, D]
        a_v = self.item_tower.augmented(batch[self.item_id])  # [B, D]
        losses = {"mimic_query": mimic_loss(a_u, items), "mimic_item": mimic_loss(a_v, queries)}
        if self.config.dat_category_weight > 0:
            assert self.item_category is not None
            categories = batch[self.item_category]  # [B] or [B, L] (a multi-valued category: its first value)
            losses["category_alignment"] = category_alignment_loss(
                items, categories[:, 0] if categories.dim() == 2 else categories,
                min_items=self.config.dat_min_category_items,
            )
        return losses

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training contract: a batch of tensors -> (scalar loss, logs of detached tensors)."""
        config = self.config
        queries = self.embed_queries(batch)  # [B, D]
        items = self.embed_items(batch)  # [B, D]
        if config.main_loss == "bce":
            main = self.bce_loss(queries, items, batch)
        else:
            main = self.softmax_loss(queries, items, batch)
        total, logs = main, {"main": main.detach()}
        if self.ssl_task is not None:
            ssl = self.ssl_loss(batch)
            total = total + config.ssl_weight * ssl
            logs["ssl"] = ssl.detach()
        if config.dat:
            weights = {
                "mimic_query": config.dat_query_mimic_weight,
                "mimic_item": config.dat_item_mimic_weight,
                "category_alignment": config.dat_category_weight,
            }
            for name, value in self.dat_losses(batch, queries, items).items():
                total = total + weights[name] * value
                logs[name] = value.detach()
        if self.queue is not None and self.training:
            self.queue.enqueue(items.detach().float(), batch[ITEM_KEY])
        logs["loss"] = total.detach()
        return total, logs
