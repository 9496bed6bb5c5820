"""Auxiliary training objectives the retrieval task composes, each a small object with its weight(s).

    SelfSupervisedLoss     ssl.weight * InfoNCE between two masked views of a batch of items (Yao et al., CIKM 2021)
    MimicLoss              dat.query_mimic_weight * ||a_u - sg(p_v)||^2 + dat.item_mimic_weight * ||a_v - sg(p_u)||^2
    CategoryAlignmentLoss  dat.category_weight * L_CA over the item embeddings of the batch (Yu et al., DLP-KDD 2021)

Each returns its named terms as ``{name: (weight, value)}``; the task adds ``weight * value`` to the loss and logs
the value. ``auxiliary_losses(config, model)`` builds the ones a config asks for, in a fixed order.

Under DistributedDataParallel (``gather``, set by the task): SSL and the mimic terms stay on this rank's rows, the
Category Alignment Loss is computed over the item embeddings of the global batch (``towers/training/distributed.py``
says why for each).
"""

from __future__ import annotations

import torch
from torch import nn

from towers.config import TowerConfig
from towers.errors import TowersConfigError
from towers.features.schema import ITEM_KEY
from towers.losses.dat import category_alignment_loss, mimic_loss
from towers.losses.masking import FeatureMaskingTask, field_codes, pairwise_mutual_information
from towers.nn.model import TwoTowerModel
from towers.sampling.corpus import CorpusSampler
from towers.tasks.gather import LOCAL, BatchGather

Terms = dict[str, tuple[float, torch.Tensor]]


class AuxiliaryLoss(nn.Module):
    """One auxiliary objective: ``terms(model, batch, queries=..., items=..., corpus=...) -> {name: (weight, value)}``."""

    gather: BatchGather = LOCAL  # the other ranks' rows under DDP (``RetrievalTask.use_gather``)

    def attach_corpus(self, features: dict[str, torch.Tensor], model: TwoTowerModel) -> None:
        """Called once with the item corpus (encoded item features); most objectives ignore it."""

    def terms(
        self,
        model: TwoTowerModel,
        batch: dict[str, torch.Tensor],
        *,
        queries: torch.Tensor,
        items: torch.Tensor,
        corpus: CorpusSampler | None,
    ) -> Terms:
        raise NotImplementedError


class SelfSupervisedLoss(AuxiliaryLoss):
    """InfoNCE between two masked views of the SSL batch (corpus-uniform items, or the batch's own items)."""

    def __init__(self, config: TowerConfig, model: TwoTowerModel) -> None:
        super().__init__()
        ssl = config.ssl
        self.weight, self.sample_size, self.sampling, self.mi_bins = ssl.weight, ssl.sample_size, ssl.sampling, ssl.mi_bins
        self.masking = FeatureMaskingTask(
            fields=len(model.item_tower.field_names),
            masking=ssl.masking,
            temperature=ssl.temperature,
            dropout=ssl.value_dropout,
            multi_valued=[name for name, kind in model.item_kinds.items() if kind == "multi_categorical"],
        )

    def attach_corpus(self, features: dict[str, torch.Tensor], model: TwoTowerModel) -> None:
        """CFM: the mutual information of the item tower's fields, measured on the corpus."""
        if self.masking.masking != "correlated":
            return
        codes = [
            field_codes(features[name].cpu().numpy(), kind=model.item_kinds[name], bins=self.mi_bins)
            for name in model.item_tower.field_names
        ]
        self.masking.set_information(pairwise_mutual_information(codes))  # [F, F]

    def terms(self, model, batch, *, queries, items, corpus) -> Terms:  # type: ignore[no-untyped-def]
        if self.sampling == "corpus":
            if corpus is None:
                raise TowersConfigError("ssl.sampling='corpus' needs the item corpus; call attach_corpus() first.")
            features, keys = corpus.sample(self.sample_size)  # {name: [S, ...]}, [S]
        else:
            features = {n: batch[n][: self.sample_size] for n in model.item_names}  # {name: [S, ...]}
            keys = batch[ITEM_KEY][: self.sample_size]  # [S]
        return {"ssl": (self.weight, self.masking.loss(model.item_tower, features, keys))}


class MimicLoss(AuxiliaryLoss):
    """DAT's adaptive-mimic terms on the batch's positive pairs: a_u toward p_v, a_v toward p_u."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.query_weight, self.item_weight = config.dat.query_mimic_weight, config.dat.item_mimic_weight

    def terms(self, model, batch, *, queries, items, corpus) -> Terms:  # type: ignore[no-untyped-def]
        assert model.query_tower.augmented is not None and model.item_tower.augmented is not None
        a_u = model.query_tower.augmented(batch[model.user_id])  # [B, D]
        a_v = model.item_tower.augmented(batch[model.item_id])  # [B, D]
        return {
            "mimic_query": (self.query_weight, mimic_loss(a_u, items)),
            "mimic_item": (self.item_weight, mimic_loss(a_v, queries)),
        }


class CategoryAlignmentLoss(AuxiliaryLoss):
    """DAT's Category Alignment Loss over the item embeddings of the batch, grouped by the item category feature.

    Under DDP the batch is the global one: every rank gathers the item embeddings (with gradients) and categories of
    all ranks and computes the same L_CA, so the averaged gradient is that of the single process on the concatenated
    batch (category covariances, the major category and ``min_category_items`` are statistics of the whole batch)."""

    def __init__(self, config: TowerConfig, model: TwoTowerModel) -> None:
        super().__init__()
        if model.item_category is None or model.item_category not in model.item_names:
            raise TowersConfigError(
                f"The Category Alignment Loss needs the item category feature {model.item_category!r} as an "
                "item-tower input; set FeatureSchema.item_category or dat.category_weight=0."
            )
        self.weight, self.min_items, self.category = config.dat.category_weight, config.dat.min_category_items, model.item_category

    def terms(self, model, batch, *, queries, items, corpus) -> Terms:  # type: ignore[no-untyped-def]
        first = first_category(batch[self.category])  # [B]
        items, first = self.gather.rows(items), self.gather.values(first)  # [G, D], [G] (G = B in one process)
        return {"category_alignment": (self.weight, category_alignment_loss(items, first, min_items=self.min_items))}


def auxiliary_losses(config: TowerConfig, model: TwoTowerModel) -> list[AuxiliaryLoss]:
    """The auxiliary objectives ``config`` asks for: SSL, then DAT mimic, then CAL."""
    losses: list[AuxiliaryLoss] = []
    if config.ssl.enabled:
        losses.append(SelfSupervisedLoss(config, model))
    if config.dat.enabled:
        losses.append(MimicLoss(config))
        if config.dat.category_weight > 0:
            losses.append(CategoryAlignmentLoss(config, model))
    return losses


def first_category(categories: torch.Tensor) -> torch.Tensor:
    """Category ids [N] or [N, L] (a multi-valued category: its first value) -> [N]."""
    return categories[:, 0] if categories.dim() == 2 else categories
