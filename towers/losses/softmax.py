"""Retrieval losses as small pure tensor functions, composed by the retrieval task (``towers/tasks/retrieval.py``).

Notation: B queries, N candidates (the B in-batch items, then B' items sampled uniformly from the corpus), D dims.
The positive of query i is candidate i. With mixed negatives the candidates' log sampling probabilities are

    log q_j = log p_j              for an in-batch candidate j < B (p_j: the streaming estimate of the expected
                                   number of occurrences of item j in a training batch)
    log q_j = log(B' / |corpus|)   for a uniformly sampled candidate j >= B (the expected number of times a given
                                   corpus item is among the B' draws with replacement of a step; > 1 when B' > |corpus|)

and the corrected logit is s^c(x_i, y_j) = <q_i, v_j> / tau - log q_j (Yi et al., RecSys 2019; the positive is
corrected too). Accidental hits (candidate j != i carrying the same item as the positive of i) get logit -inf.
The loss is L = -(1/B) * sum_i r_i * log softmax_j(s^c(x_i, .))_i with reward weights r_i, computed by
``in_batch_softmax_loss`` in one fused node (``towers/losses/fused.py``; the pieces below are its reference).
Queued item embeddings (``towers/sampling/queue.py``) are further candidates after the uniform ones, with
log q_j = log(p_j * Q / B); a candidate ``excluded`` for row i (a queued copy of its positive) gets logit -inf there too. ``sampled_binary_cross_
entropy`` is the alternative main loss: a logistic loss on the positive and on S random negatives.

The exact full-corpus softmax (``full_corpus_softmax_loss``) scores every corpus item for every query and needs no
sampling correction: L = -(1/B) * sum_i r_i * log(exp(s_ii) / (exp(s_ii) + sum_{c != y_i} exp(s_ic))), the positive
scored with its fresh in-batch embedding and its own corpus row left out (the accidental hit of a full softmax).

Logits are computed in float32 even under autocast (``full_precision``): inside ``torch.autocast`` a matmul of
float32 tensors still runs in bf16/fp16, which would round logits of ~20 (tau = 0.05) by ~0.06 and the sampling
correction with them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from towers.losses.fused import scored_cross_entropy


def full_precision(tensor: torch.Tensor) -> torch.autocast:
    """A context that switches autocast off on ``tensor``'s device, so casts to float32 inside it hold."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def similarity_logits(queries: torch.Tensor, candidates: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """queries [B, D], candidates [N, D] -> float32 logits [B, N] = <q_i, v_j> / temperature (autocast or not)."""
    with full_precision(queries):
        return (queries.float() / temperature) @ candidates.float().transpose(0, 1)  # [B, N] (1/tau on [B, D])


def correct_sampling_bias(logits: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """logits [B, N], log_q [N] (log sampling probability of each candidate) -> logits - log_q [B, N]."""
    return logits - log_q.unsqueeze(0)  # [B, N]


def uniform_log_q(num_sampled: int, corpus_size: int, *, device: torch.device | None = None) -> torch.Tensor:
    """log q [B'] of B' candidates drawn uniformly (with replacement) from a corpus: log(B' / |corpus|) each, the
    expected number of draws of an item (uncapped: B' > |corpus| draws an item more than once on average)."""
    value = math.log(num_sampled / corpus_size)
    return torch.full((num_sampled,), value, dtype=torch.float32, device=device)  # [B']


def mixed_negative_log_q(in_batch_log_p: torch.Tensor, *, num_uniform: int, corpus_size: int) -> torch.Tensor:
    """in_batch_log_p [B] -> log q [B + B']: the in-batch estimates, then log(B' / |corpus|) for the uniform ones."""
    if num_uniform == 0:
        return in_batch_log_p
    uniform = uniform_log_q(num_uniform, corpus_size, device=in_batch_log_p.device)  # [B']
    return torch.cat([in_batch_log_p.to(torch.float32), uniform])  # [B + B']


def remove_accidental_hits(
    logits: torch.Tensor, positive_ids: torch.Tensor, candidate_ids: torch.Tensor
) -> torch.Tensor:
    """Mask candidates that are the query's own positive item somewhere other than the diagonal.

    logits [B, N] (N >= B, the positive of row i in column i), positive_ids [B], candidate_ids [N] -> logits [B, N]
    with -inf where candidate_ids[j] == positive_ids[i] and j != i.
    """
    same_item = positive_ids.unsqueeze(1) == candidate_ids.unsqueeze(0)  # [B, N]
    rows = torch.arange(logits.shape[0], device=logits.device)
    same_item[rows, rows] = False  # the diagonal is the positive itself
    return logits.masked_fill(same_item, float("-inf"))  # [B, N]


def weighted_softmax_cross_entropy(logits: torch.Tensor, *, weights: torch.Tensor | None = None) -> torch.Tensor:
    """logits [B, N] with the positive of row i in column i, weights [B] (rewards r_i) -> scalar.

    L = (1/B) * sum_i r_i * (logsumexp_j logits[i, j] - logits[i, i]); r_i = 1 when weights is None.
    """
    labels = torch.arange(logits.shape[0], device=logits.device)  # [B]
    return weighted_cross_entropy(logits, labels, weights=weights)


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, *, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """logits [B, N], labels [B] (the positive's column), weights [B] -> (1/B) sum_i r_i CE_i, in float32."""
    with full_precision(logits):
        per_example = F.cross_entropy(logits.float(), labels, reduction="none")  # [B]
        if weights is not None:
            per_example = per_example * weights.to(per_example.dtype)
        return per_example.mean()


def in_batch_softmax_loss(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    *,
    temperature: float,
    log_q: torch.Tensor | None = None,
    positive_ids: torch.Tensor | None = None,
    candidate_ids: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    excluded: torch.Tensor | None = None,
    matmul: str = "float32",
) -> torch.Tensor:
    """The composed loss: queries [B, D], candidates [N, D] (first B are the positives), log_q [N] or None for the
    plain softmax, positive_ids [B] and candidate_ids [N] to remove accidental hits (both or neither), weights [B],
    excluded bool [B, N]: candidates that are never negatives of row i (e.g. queued copies of its positive);
    matmul "bfloat16" rounds the matmuls' inputs and results (``scored_cross_entropy``)."""
    rows = queries.shape[0]
    labels = torch.arange(rows, device=queries.device)  # [B] the positive of row i is candidate i
    mask = None
    if positive_ids is not None and candidate_ids is not None:
        mask = positive_ids.unsqueeze(1) == candidate_ids.unsqueeze(0)  # [B, N] accidental hits ...
        mask[labels, labels] = False  # ... but not the positive itself
    if excluded is not None:
        mask = excluded if mask is None else mask.logical_or_(excluded)  # [B, N]
    return scored_cross_entropy(  # similarity_logits - log_q, remove_accidental_hits, weighted_softmax_cross_entropy
        queries.float() / temperature, candidates, labels, bias=None if log_q is None else -log_q.float(),
        weights=weights, mask=mask, matmul=matmul,
    )


def sampled_binary_cross_entropy(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    *,
    temperature: float,
    positive_ids: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy with S random negatives shared by the batch (the loss of the DAT paper).

    queries [B, D], positives [B, D], negatives [S, D] -> scalar
    L = (1/B) * sum_i r_i * (softplus(-s_ii) + sum_s softplus(s_is)), s = <q, v> / temperature; a negative that is
    row i's own positive item (positive_ids [B] == negative_ids [S]) is left out of row i.
    """
    with full_precision(queries):
        positive = (queries.float() * positives.float()).sum(dim=1) / temperature  # [B]
        negative = similarity_logits(queries, negatives, temperature=temperature)  # [B, S]
        negative_terms = F.softplus(negative)  # [B, S]
        if positive_ids is not None and negative_ids is not None:
            negative_terms = negative_terms * (positive_ids.unsqueeze(1) != negative_ids.unsqueeze(0)).to(negative.dtype)
        per_example = F.softplus(-positive) + negative_terms.sum(dim=1)  # [B]
        if weights is not None:
            per_example = per_example * weights.to(per_example.dtype)
        return per_example.mean()


def full_corpus_softmax_loss(
    queries: torch.Tensor,
    positives: torch.Tensor,
    corpus: torch.Tensor,
    *,
    temperature: float,
    positive_keys: torch.Tensor,
    corpus_keys: torch.Tensor,
    weights: torch.Tensor | None = None,
    positive_bias: torch.Tensor | None = None,
    corpus_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The exact softmax over the whole corpus: queries [B, D], positives [B, D] (row i's item), corpus [C, D] with
    keys corpus_keys [C], positive_keys [B] -> scalar; positive_bias [B] and corpus_bias [C] are added to the logits
    (the popularity discount, ``loss.popularity_discount``).

    Candidates of row i: its positive (column 0), then every corpus item except those with row i's key (the corpus
    copy of the positive, replaced by column 0). A positive absent from the corpus is still column 0.
    """
    with full_precision(queries):
        positive = (queries.float() * positives.float()).sum(dim=1, keepdim=True) / temperature  # [B, 1]
        others = similarity_logits(queries, corpus, temperature=temperature)  # [B, C]
        if positive_bias is not None and corpus_bias is not None:
            positive = positive + positive_bias.float().unsqueeze(1)  # [B, 1]
            others = others + corpus_bias.float().unsqueeze(0)  # [B, C]
        others = others.masked_fill(positive_keys.unsqueeze(1) == corpus_keys.unsqueeze(0), float("-inf"))  # [B, C]
        logits = torch.cat([positive, others], dim=1)  # [B, 1 + C]
        labels = torch.zeros(logits.shape[0], dtype=torch.int64, device=logits.device)  # [B]
        per_example = F.cross_entropy(logits, labels, reduction="none")  # [B]
        if weights is not None:
            per_example = per_example * weights.to(per_example.dtype)
        return per_example.mean()
