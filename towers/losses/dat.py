"""The Dual Augmented Two-tower losses (Yu et al., DLP-KDD 2021), as pure tensor functions.

The adaptive-mimic mechanism pulls the augmented vectors (``towers/nn/augmented.py``) toward the other side's output
on positive pairs, with stop-gradient on that output:

    loss_u = (1/B) * sum_i ||a_{u_i} - sg(p_{v_i})||^2        (lambda1)
    loss_v = (1/B) * sum_i ||a_{v_i} - sg(p_{u_i})||^2        (lambda2)

so the mimic losses move a_u and a_v only, never the towers.

Category Alignment Loss (lambda3): with C(S_k) the covariance of the item embeddings of category k in the batch and
"major" the category with most rows,

    L_CA = sum_{k != major} ||C(S_major) - C(S_k)||_F^2

over the categories with at least ``min_items`` rows (others are left out); it transfers the embedding geometry of
the head category to the rest.
"""

from __future__ import annotations

import torch

from towers.losses.softmax import full_precision


def mimic_loss(augmented: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """augmented [B, D], target [B, D] (the other tower's output; its gradient is stopped) -> mean squared distance."""
    with full_precision(augmented):
        return (augmented.float() - target.detach().float()).pow(2).sum(dim=1).mean()


def category_covariances(
    embeddings: torch.Tensor, categories: torch.Tensor, *, min_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """embeddings [B, D], categories int64 [B] (0 = missing, left out) -> (covariances [K, D, D], rows [K]) of the K
    categories with at least ``min_items`` rows, unbiased (divided by rows - 1), in float32 even under autocast.

    Cost O(B * D^2) whatever the number of categories: rows of kept categories are centred by their category's mean
    and their outer products summed per category (``index_add``); nothing of shape [K, B, D] is built.
    """
    with full_precision(embeddings):
        x = embeddings.float()  # [B, D]
        values, inverse, counts = torch.unique(categories, return_inverse=True, return_counts=True)  # [U], [B], [U]
        keep = (counts >= min_items) & (values != 0)  # [U]
        position = torch.cumsum(keep.to(torch.int64), dim=0) - 1  # [U] index among the kept categories
        row_kept = keep[inverse]  # [B]
        rows_x = x[row_kept]  # [B', D]
        group = position[inverse[row_kept]]  # [B'] in 0..K-1
        kept, dim = int(keep.sum()), x.shape[1]
        rows = counts[keep].to(x.dtype)  # [K]
        means = x.new_zeros(kept, dim).index_add(0, group, rows_x) / rows.clamp(min=1).unsqueeze(1)  # [K, D]
        centred = rows_x - means[group]  # [B', D]
        outer = (centred.unsqueeze(2) * centred.unsqueeze(1)).reshape(-1, dim * dim)  # [B', D * D]
        sums = x.new_zeros(kept, dim * dim).index_add(0, group, outer).view(kept, dim, dim)  # [K, D, D]
        return sums / (rows - 1).clamp(min=1).view(-1, 1, 1), rows


def category_alignment_loss(embeddings: torch.Tensor, categories: torch.Tensor, *, min_items: int = 2) -> torch.Tensor:
    """embeddings [B, D] (item tower outputs), categories int64 [B] -> sum_k ||C(major) - C(k)||_F^2 (a float32
    scalar; zero when fewer than two categories have ``min_items`` rows)."""
    with full_precision(embeddings):
        covariances, rows = category_covariances(embeddings, categories, min_items=min_items)  # [K, D, D], [K]
        if rows.shape[0] < 2:
            return embeddings.float().sum() * 0.0
        major = covariances[int(rows.argmax())]  # [D, D]
        return (covariances - major.unsqueeze(0)).pow(2).sum()
