"""The retrieval task (like tensorflow/recommenders' ``tasks/retrieval.py``): candidates, log q, hit removal, the loss.

Given the query embeddings [B, D] and the positive items' embeddings [B, D] of a batch, the task

1. assembles the candidates (``loss.negatives="sampled"``): the B in-batch items, then B' items drawn uniformly
   from the corpus (mixed negatives), then the Q queued embeddings of earlier batches (``towers/sampling/queue.py``);
2. assembles log q [N] of every candidate: the streaming frequency estimate of the expected copies per batch for
   in-batch and queued items (``towers/sampling/frequency.py``), log(B' / |corpus|) for uniform ones
   (``towers/losses/softmax.py``);
3. applies the loss: the corrected softmax with accidental hits removed (queued copies of a row's positive are
   excluded from that row), the sampled binary cross-entropy (``loss.function="bce"``), or the exact softmax over
   every corpus item (``loss.negatives="full_corpus"``: no sampling, no correction; the corpus embeddings come from
   ``towers/sampling/corpus_table.py``);
4. adds the auxiliary objectives it composes (``towers/tasks/auxiliary.py``), each with its weight:

    L = L_main + ssl.weight * L_ssl + lambda1 * L_mimic_u + lambda2 * L_mimic_v + lambda3 * L_CA

and returns ``(loss, logs)`` with every term detached for logging. The towers only embed.

Which negatives to use: the exact full-corpus softmax when the item tower can run over the whole corpus at every
step (up to ~100k items on a GPU, ~10-20k on a CPU; ``loss.corpus_gradient_negatives`` keeps exact values but
sends item gradients through the batch's items and K corpus items (the largest gradients and an unbiased draw),
``loss.corpus_refresh_steps`` > 1 trades exact values for speed); otherwise in-batch negatives with the
sampling-bias correction plus many uniform negatives (``loss.uniform_negatives`` in the thousands), which approach it at a cost that does not grow with the corpus.

Seams: ``candidates`` (the sampled path's candidate set and log q) and ``corpus_embeddings`` (the full-corpus path's
candidates) are the two places a distributed trainer widens the candidate set with other ranks' items.

Under DistributedDataParallel the task is given a ``BatchGather`` (``towers/tasks/gather.py``; ``use_gather``): the
in-batch and uniform candidates are every rank's (gathered with gradients, this rank's rows first), the estimator and
the queue take the ids and items of the global batch, and the loss is the mean over this rank's rows, so that DDP's
gradient average equals the single-process gradient on the concatenated batch (``towers/training/distributed.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from towers.config import TowerConfig
from towers.errors import TowersConfigError
from towers.features.schema import ITEM_KEY, WEIGHT
from towers.losses.fused import inject, scored_cross_entropy, scored_cross_entropy_and_candidate_gradient
from towers.losses.softmax import (
    full_corpus_softmax_loss,
    in_batch_softmax_loss,
    mixed_negative_log_q,
    sampled_binary_cross_entropy,
)
from towers.nn.model import TwoTowerModel
from towers.sampling.corpus import CorpusSampler
from towers.sampling.corpus_table import CorpusEmbeddingTable
from towers.sampling.frequency import StreamingFrequencyEstimator
from towers.sampling.queue import ItemEmbeddingQueue
from towers.tasks.auxiliary import AuxiliaryLoss, first_category
from towers.tasks.gather import LOCAL, BatchGather


class Candidates:
    """What the softmax scores against: embeddings [N, D], keys [N], log q [N] (None: uncorrected), excluded [B, N]."""

    def __init__(
        self,
        embeddings: torch.Tensor,
        keys: torch.Tensor,
        log_q: torch.Tensor | None,
        excluded: torch.Tensor | None = None,
    ) -> None:
        self.embeddings, self.keys, self.log_q, self.excluded = embeddings, keys, log_q, excluded


class RetrievalTask(nn.Module):
    """Owns the estimator, the corpus sampler, the queue and the auxiliary objectives; applies the loss."""

    def __init__(self, config: TowerConfig, *, auxiliaries: Sequence[AuxiliaryLoss] = ()) -> None:
        super().__init__()
        loss = config.loss
        self.config = config
        self.estimator = StreamingFrequencyEstimator(
            buckets=loss.estimator_buckets, hashes=loss.estimator_hashes, alpha=loss.estimator_alpha,
            seed=config.training.seed, update=loss.estimator_update,
        )
        self.corpus: CorpusSampler | None = None
        self.item_category: str | None = None  # the item feature loss.category_discount groups by (None: off)
        self.category_slots = 0  # 1 + the largest category id of the corpus (fixed when the corpus is attached)
        self.queue = ItemEmbeddingQueue(loss.queue_size, config.towers.output_dim) if loss.queue_size > 0 else None
        self.corpus_table = CorpusEmbeddingTable(loss.corpus_refresh_steps, loss.corpus_gradient_negatives)
        self.auxiliaries = nn.ModuleList(auxiliaries)
        self.use_gather(LOCAL)

    def use_gather(self, gather: BatchGather) -> None:
        """How to see the other ranks' rows: ``LOCAL`` in one process, an all-gather under DDP (also given to the
        auxiliary objectives; only the Category Alignment Loss uses it)."""
        self.gather = gather
        for auxiliary in self.auxiliaries:
            auxiliary.gather = gather

    def attach_corpus(self, features: dict[str, torch.Tensor], keys: torch.Tensor, *, model: TwoTowerModel) -> None:
        """Give the task the corpus: uniform and BCE negatives, the SSL batch, CFM's mutual information."""
        self.corpus = CorpusSampler(features, keys)
        if self.config.loss.category_discount > 0:
            if model.item_category is None or model.item_category not in features:
                raise TowersConfigError(
                    f"loss.category_discount={self.config.loss.category_discount} needs the item category feature "
                    f"({model.item_category!r}) as an item-tower input; set FeatureSchema.item_category (a dataset "
                    "config's items.category) or loss.category_discount=0."
                )
            self.item_category = model.item_category
            self.category_slots = int(first_category(features[model.item_category]).max()) + 1 if keys.numel() else 0
        for auxiliary in self.auxiliaries:
            auxiliary.attach_corpus(features, model)

    def _corpus(self, what: str) -> CorpusSampler:
        if self.corpus is None:
            raise TowersConfigError(f"{what} needs the item corpus; call attach_corpus() before training.")
        return self.corpus

    # --- candidates and log q ---------------------------------------------------------------------------------------

    def candidates(self, items: torch.Tensor, keys: torch.Tensor, *, model: TwoTowerModel) -> Candidates:
        """In-batch items [B, D] with keys [B] -> in-batch, then uniform, then queued candidates [N, D].

        With W ranks the in-batch candidates are the G = W * B items of the global batch (this rank's first) and the
        uniform ones the W * B' draws of all ranks; one process is W = 1."""
        loss, gather = self.config.loss, self.gather
        global_keys = gather.values(keys)  # [G], rank order
        embeddings = gather.local_first(gather.rows(items))  # [G, D], this rank's rows first
        candidate_keys, log_q = gather.local_first(global_keys), None  # [G]
        if loss.sampling_bias_correction:
            log_q = self.estimator.log_probability(candidate_keys)  # [G] (updated with the global batch in forward)
        if loss.uniform_negatives > 0:
            corpus = self._corpus("loss.uniform_negatives > 0")
            sampled, sampled_keys = corpus.sample(loss.uniform_negatives)  # {name: [B', ...]}, [B'] (this rank's)
            embeddings = torch.cat([embeddings, gather.rows(model.item_tower(sampled))])  # [G + W * B', D]
            candidate_keys = torch.cat([candidate_keys, gather.values(sampled_keys)])  # [G + W * B']
            if log_q is not None:
                log_q = mixed_negative_log_q(
                    log_q, num_uniform=gather.world_size * loss.uniform_negatives, corpus_size=corpus.size
                )
        excluded = None
        if self.queue is not None:
            queued_keys = self.queue.keys  # [Q]
            embeddings = torch.cat([embeddings, self.queue.embeddings.to(embeddings.dtype)])  # [N + Q, D]
            candidate_keys = torch.cat([candidate_keys, queued_keys])  # [N + Q]
            allowed = torch.cat(
                [torch.ones(keys.shape[0], embeddings.shape[0] - self.queue.size, dtype=torch.bool, device=keys.device),
                 self.queue.negative_mask(keys)], dim=1,
            )  # [B, N + Q]
            excluded = ~allowed  # [B, N + Q]
            if log_q is not None:
                queued_log_p = self.estimator.log_probability(queued_keys.clamp(min=0))  # [Q]
                log_q = torch.cat([log_q, self.queue.log_q(queued_log_p, batch_size=int(global_keys.shape[0]))])
        return Candidates(embeddings, candidate_keys, log_q, excluded)

    # --- the main loss ----------------------------------------------------------------------------------------------

    def softmax_loss(
        self, queries: torch.Tensor, items: torch.Tensor, batch: dict[str, torch.Tensor], *, model: TwoTowerModel
    ) -> torch.Tensor:
        """The (corrected) softmax over in-batch, uniform and queued candidates."""
        keys = batch[ITEM_KEY]  # [B]
        candidates = self.candidates(items, keys, model=model)
        hits = self.config.loss.remove_accidental_hits
        return in_batch_softmax_loss(
            queries,
            candidates.embeddings,
            temperature=self.config.loss.temperature,
            log_q=candidates.log_q,
            positive_ids=keys if hits else None,
            candidate_ids=candidates.keys if hits else None,
            weights=batch.get(WEIGHT),
            excluded=candidates.excluded,
            matmul=self.config.loss.softmax_matmul,
        )

    def corpus_embeddings(self, keys: torch.Tensor, *, model: TwoTowerModel) -> tuple[torch.Tensor, torch.Tensor]:
        """The full-corpus candidates: (embeddings [C, D], keys [C]) of every corpus item (the batch's items ``keys``
        [B] fresh in a cached table)."""
        corpus = self._corpus("loss.negatives='full_corpus'")
        embeddings = self.corpus_table.embeddings(model.item_tower, corpus, keys=keys)  # [C, D]
        return embeddings, corpus.keys

    def full_corpus_loss(
        self, queries: torch.Tensor, items: torch.Tensor, batch: dict[str, torch.Tensor], *, model: TwoTowerModel
    ) -> torch.Tensor:
        """The exact softmax over every corpus item (no sampling, so no correction). The positive is scored with its
        corpus row, like every negative: a training row's own item features are as of its event, the corpus's as of
        the cutoff, and mixing the two lets the towers tell positives by their features' date (a time-varying count
        is lower on the positive). A positive absent from the corpus keeps its in-batch embedding."""
        keys = batch[ITEM_KEY]  # [B]
        corpus_sampler = self._corpus("loss.negatives='full_corpus'")
        rows = self.corpus_table.rows_of(corpus_sampler, keys)  # [B], -1: absent
        category = self.item_category
        bias = self.logit_bias(corpus_sampler.keys,
                               corpus_sampler.features()[category] if category else None)  # [C] or None
        every_positive_in_corpus = bool((rows >= 0).all())
        scaled = queries.float() / self.config.loss.temperature  # [B, D]
        if every_positive_in_corpus and self.corpus_table.gradient_negatives > 0 and torch.is_grad_enabled():
            return self.truncated_corpus_loss(scaled, rows, bias=bias, weights=batch.get(WEIGHT), model=model)
        corpus, corpus_keys = self.corpus_embeddings(keys, model=model)
        if every_positive_in_corpus:  # a plain cross-entropy over the corpus
            return scored_cross_entropy(scaled, corpus, rows, bias=bias, weights=batch.get(WEIGHT),
                                        matmul=self.config.loss.softmax_matmul)  # over [B, C]
        positives = torch.where((rows >= 0).unsqueeze(1), corpus[rows.clamp(min=0)].to(items.dtype), items)  # [B, D]
        return full_corpus_softmax_loss(
            queries, positives, corpus, temperature=self.config.loss.temperature, positive_keys=keys,
            corpus_keys=corpus_keys, weights=batch.get(WEIGHT),
            positive_bias=self.logit_bias(keys, batch[category] if category else None), corpus_bias=bias,
        )

    def truncated_corpus_loss(
        self,
        scaled: torch.Tensor,
        rows: torch.Tensor,
        *,
        bias: torch.Tensor | None,
        weights: torch.Tensor | None,
        model: TwoTowerModel,
    ) -> torch.Tensor:
        """The full-corpus softmax with a truncated item backward (``loss.corpus_gradient_negatives``; see
        ``towers/sampling/corpus_table.py``): scaled queries [B, D] (q / tau), each row's positive corpus row [B].
        The loss and the query gradients are exact; item-tower gradients flow through the positives, the rows with
        the largest gradient and an importance-weighted draw of the others (unbiased)."""
        corpus = self._corpus("loss.negatives='full_corpus'")
        features = corpus.features()
        table = self.corpus_table.values(model.item_tower, corpus, rows)  # [C, D], no graph (cached: N steps old)
        loss, gradient = scored_cross_entropy_and_candidate_gradient(scaled, table, rows, bias=bias, weights=weights,
                                                                     matmul=self.config.loss.softmax_matmul)
        chosen, weights = self.corpus_table.gradient_rows(gradient, rows)  # [R], [R]
        fresh = model.item_tower({name: value[chosen] for name, value in features.items()})  # [R, D], a graph
        self.corpus_table.remember(chosen, fresh)
        return inject(loss, fresh, gradient[chosen] * weights.unsqueeze(1))

    def popularity_bias(self, keys: torch.Tensor) -> torch.Tensor | None:
        """beta * log p [N] of ``keys`` [N] (``loss.popularity_discount`` beta; p the streaming estimate of the
        expected copies per batch, 1 for an item never seen), added to the training logits of the full-corpus
        softmax; None when beta is 0.

        The softmax fits p(j | i) with the biased logits, so the towers' own score learns
        log p(j | i) - beta * log p_j + const: serving (which adds nothing) discounts popularity by beta. beta = 0 is
        the exact softmax; beta = 1 is what the uncorrected in-batch softmax learns (the pointwise mutual
        information), which ranks rare items high and loses overall recall."""
        beta = self.config.loss.popularity_discount
        if beta == 0.0:
            return None
        return beta * self.estimator.log_probability(keys.clamp(min=0))  # [N]

    def category_bias(self, categories: torch.Tensor) -> torch.Tensor | None:
        """gamma * log s_c [N] of the item categories [N] (or [N, L]: the first value; ``loss.category_discount``
        gamma), added to the training logits of the full-corpus softmax like ``popularity_bias``; None when gamma is 0.

        s_c is category c's share of the expected occurrences per batch, the streaming estimate summed over the
        corpus items of c (items never seen count 0), smoothed by one average item per category, so a category with
        no occurrence yet has a small but finite share; a category no corpus item has gets that smallest share.
        The served score then discounts each category by gamma * log s_c: logit adjustment by category (Menon et
        al., ICLR 2021), which lifts the small categories' recall at some cost in overall recall. O(C) per step."""
        gamma = self.config.loss.category_discount
        if gamma == 0.0:
            return None
        corpus = self._corpus("loss.category_discount > 0")
        assert self.item_category is not None  # set by attach_corpus
        in_corpus = first_category(corpus.features()[self.item_category]).to(torch.int64)  # [C]
        keys = corpus.keys.clamp(min=0)  # [C]
        occurrences = torch.where(self.estimator.seen(keys), self.estimator.probability(keys), 0.0)  # [C]
        slots = self.category_slots
        totals = torch.zeros(slots + 1, device=occurrences.device).index_add_(0, in_corpus, occurrences)  # [K + 1]
        prior = occurrences.sum().clamp(min=1e-12) / max(corpus.size, 1)  # one average item's occurrences
        share = (totals + prior) / (totals.sum() + prior * (slots + 1))  # [K + 1]; slot K: no corpus item
        wanted = first_category(categories).to(torch.int64)  # [N]
        return gamma * torch.log(share)[torch.where((wanted >= 0) & (wanted < slots), wanted, slots)]  # [N]

    def logit_bias(self, keys: torch.Tensor, categories: torch.Tensor | None) -> torch.Tensor | None:
        """The sum of ``popularity_bias`` and ``category_bias`` [N] of items ``keys`` [N] (categories [N] or
        [N, L]: None where the category discount is off); None when both are off."""
        popularity = self.popularity_bias(keys)
        category = self.category_bias(categories) if categories is not None else None
        if popularity is None:
            return category
        return popularity if category is None else popularity + category

    def bce_loss(
        self, queries: torch.Tensor, items: torch.Tensor, batch: dict[str, torch.Tensor], *, model: TwoTowerModel
    ) -> torch.Tensor:
        """Binary cross-entropy: the positive pair against ``loss.bce_negatives`` items drawn uniformly."""
        sampled, sampled_keys = self._corpus("loss.function='bce'").sample(self.config.loss.bce_negatives)
        negatives = model.item_tower(sampled)  # [S, D]
        return sampled_binary_cross_entropy(
            queries, items, negatives, temperature=self.config.loss.temperature,
            positive_ids=batch[ITEM_KEY], negative_ids=sampled_keys, weights=batch.get(WEIGHT),
        )

    def forward(
        self, model: TwoTowerModel, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A batch of tensors -> (scalar loss, logs of detached tensors: main, each auxiliary term, loss)."""
        if self.training:  # every main loss: the estimator's state is registered with the version
            self.estimator.update(self.gather.values(batch[ITEM_KEY]))  # the global batch: the same state on every rank
        queries = model.embed_queries(batch)  # [B, D]
        items = model.embed_items(batch)  # [B, D]
        if self.config.loss.function == "bce":
            main = self.bce_loss(queries, items, batch, model=model)
        elif self.config.loss.negatives == "full_corpus":
            main = self.full_corpus_loss(queries, items, batch, model=model)
        else:
            main = self.softmax_loss(queries, items, batch, model=model)
        total, logs = main, {"main": main.detach()}
        for auxiliary in self.auxiliaries:
            terms = auxiliary.terms(model, batch, queries=queries, items=items, corpus=self.corpus)
            for name, (weight, value) in terms.items():
                total = total + weight * value
                logs[name] = value.detach()
        if self.queue is not None and self.training:
            self.queue.enqueue(self.gather.values(items.detach().float()), self.gather.values(batch[ITEM_KEY]))
        logs["loss"] = total.detach()
        return total, logs
