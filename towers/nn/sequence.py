"""A transformer encoder over a multi-valued history feature (SASRec-style self-attention, bidirectional over the
known history), pooled to one field of the tower.

Input: ids [B, L] of a padded list (0 = padding; the platform's recent items are most recent first, so position 0
is the most recent item) and their vectors [B, L, E] from the feature's (shared) embedding table; ``length`` keeps
the first L' <= L slots and ``width`` W projects the vectors to the layers' width (cost grows with L' * W^2). Steps:

    x = W_in vectors + P[position]                     learned position (recency rank) embeddings, optional
    x = layer_n(... layer_1(x))                        pre-norm layers: x + MHA(LN(x)), x + FFN(LN(x)) (ReLU); padded keys
                                                       get -inf attention scores
    x = LN(x)
    out = x[:, 0]                                      pooling "last": the most recent position ([B, W]); the last
                                                       layer then computes only that position's query, attention
                                                       and feed-forward (every position still gives keys and values):
                                                       the same output at ~1/L of that layer's per-position cost
        | sum_l softmax_l(<w, x_l> / sqrt(E)) x_l      pooling "attention": a learned query w over the valid positions
        | masked mean of x                             pooling "mean"

An empty list (no valid position) yields a learned ``empty`` vector; inside the layers its row attends to position 0
so no softmax is taken over nothing (no NaN). Everything is plain matmuls, softmax and layer norms, so the dynamo
ONNX exporter takes it as is (parity <= 1e-5 on padded, empty and full lists is checked at export).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from towers.config import SequenceConfig
from towers.errors import TowersConfigError


class SelfAttentionLayer(nn.Module):
    """One pre-norm transformer encoder layer: x + MHA(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, *, heads: int, feedforward: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.projection = nn.Linear(dim, dim)
        self.feedforward_norm = nn.LayerNorm(dim)
        self.feedforward = nn.Sequential(nn.Linear(dim, feedforward), nn.ReLU(), nn.Linear(feedforward, dim))
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor, *, first_only: bool = False) -> torch.Tensor:
        """x [B, L, E], bias [B, 1, 1, L] (0 for a valid key, -inf for padding) -> [B, L, E], or [B, 1, E] with
        ``first_only``: the output at position 0 alone (its query attends over every position's keys and values)."""
        length, dim = x.shape[1], x.shape[2]
        qkv = self.qkv(self.attention_norm(x)).reshape(-1, length, 3, self.heads, self.head_dim)  # [B, L, 3, H, d]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, H, L, d]
        if first_only:
            q, x = q[:, :, :1], x[:, :1]  # [B, H, 1, d], [B, 1, E]
        # softmax(q k^T / sqrt(d) + bias) v, fused (dropout on the weights while training)
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attention_dropout if self.training else 0.0
        )  # [B, H, L or 1, d]
        context = context.transpose(1, 2).reshape(-1, q.shape[2], dim)  # [B, L or 1, E]
        x = x + self.dropout(self.projection(context))
        return x + self.dropout(self.feedforward(self.feedforward_norm(x)))  # [B, L or 1, E]


class SequenceEncoder(nn.Module):
    """ids [B, L], vectors [B, L, E] -> one field [B, W] (W = ``width``, else E; see the module docstring)."""

    def __init__(self, *, dim: int, length: int, config: SequenceConfig, feature: str) -> None:
        super().__init__()
        width = config.width or dim
        if width % config.heads != 0:
            raise TowersConfigError(
                f"The sequence encoder of {feature!r} has {config.heads} heads, which do not divide its width "
                f"{width} (encoders.sequences.*.width, else towers.embedding_dim); pick a divisor of {width} for "
                "encoders.sequences.*.heads."
            )
        self.length = min(int(config.length or length), length)
        self.width = width
        self.input_projection = nn.Linear(dim, width) if width != dim else None
        length, dim = self.length, width
        self.pooling = config.pooling
        self.positions = nn.Parameter(torch.randn(length, dim) * 0.02) if config.positions == "learned" else None
        self.layers = nn.ModuleList(
            SelfAttentionLayer(dim, heads=config.heads, feedforward=config.feedforward, dropout=config.dropout)
            for _ in range(config.layers)
        )
        self.input_dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(dim)
        self.pool_query = nn.Parameter(torch.randn(dim) * 0.02) if config.pooling == "attention" else None
        self.empty = nn.Parameter(torch.zeros(dim))

    def forward(self, ids: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        ids, vectors = ids[:, : self.length], vectors[:, : self.length]  # [B, L'], [B, L', E]
        if self.input_projection is not None:
            vectors = self.input_projection(vectors)  # [B, L', W]
        length = ids.shape[1]
        valid = ids != 0  # [B, L]
        empty = ~valid.any(dim=1)  # [B]
        first = torch.arange(length, device=ids.device) == 0  # [L]
        attend = valid | (empty.unsqueeze(1) & first.unsqueeze(0))  # [B, L]: an empty row attends to slot 0
        x = vectors
        if self.positions is not None:
            x = x + self.positions.to(x.dtype).unsqueeze(0)  # [B, L, E]
        x = self.input_dropout(x)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        bias = torch.where(attend, zero, torch.full_like(zero, float("-inf")))[:, None, None, :]  # [B, 1, 1, L]
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):  # "last" pooling reads position 0 only: so does the last layer
            x = layer(x, bias, first_only=self.pooling == "last" and index == last)
        x = self.norm(x)  # [B, L, E]
        if self.pooling == "last":
            pooled = x[:, 0]  # [B, E] the most recent position
        elif self.pooling == "attention":
            assert self.pool_query is not None
            scores = (x @ self.pool_query.to(x.dtype)) / math.sqrt(x.shape[2]) + bias[:, 0, 0, :]  # [B, L]
            pooled = (torch.softmax(scores, dim=1).unsqueeze(2) * x).sum(dim=1)  # [B, E]
        else:
            weights = valid.to(x.dtype).unsqueeze(2)  # [B, L, 1]
            pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # [B, E]
        return torch.where(empty.unsqueeze(1), self.empty.to(pooled.dtype).unsqueeze(0), pooled)  # [B, E]


def sequence_encoders(
    specs: tuple, *, dim: int, configs: tuple[tuple[str, SequenceConfig], ...]
) -> dict[str, SequenceEncoder]:
    """{feature name: SequenceEncoder} for the multi-valued features of ``specs`` that ``configs`` names."""
    encoders: dict[str, SequenceEncoder] = {}
    by_name = dict(configs)
    for spec in specs:
        if spec.kind != "multi_categorical":
            continue
        config = by_name.get(spec.name, by_name.get(spec.name.rsplit("__", 1)[-1]))
        if config is not None:
            encoders[spec.name] = SequenceEncoder(dim=dim, length=int(spec.max_len), config=config, feature=spec.name)
    return encoders


def unmatched_sequences(configs: tuple[tuple[str, SequenceConfig], ...], specs: tuple) -> list[str]:
    """Names in ``encoders.sequences`` that match no multi-valued feature of ``specs``."""
    lists = [s.name for s in specs if s.kind == "multi_categorical"]
    short = {name.rsplit("__", 1)[-1] for name in lists}
    return [name for name, _ in configs if name not in lists and name not in short]


__all__ = ["SelfAttentionLayer", "SequenceEncoder", "sequence_encoders", "unmatched_sequences"]
