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
    and their outer products summed per category (``index_add``); nothing of shape [K, B, D] is built. (The loss
    itself does not need them: ``category_alignment_loss`` works from the Gram matrix.)
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
    scalar; zero when fewer than two categories have ``min_items`` rows).

    Computed from the Gram matrix of the centred rows, never from the D x D covariances: with w_k = 1 / (n_k - 1),
    <C_a, C_b> = w_a * w_b * sum_{i in a, j in b} (x_i . x_j)^2, so with T[a, b] = sum_{i in a, j in b} G_ij^2,

        L = sum_k (w_k^2 T[k, k] - 2 w_k w_major T[k, major] + w_major^2 T[major, major]).

    One [B', B'] matmul (B' kept rows) and per-category sums by ``index_add``: the cost grows with B'^2 * D and not
    with the number of categories (a dense [K, B, D] or per-category loop would). The expansion loses float32
    precision only when two covariances nearly coincide (absolute error ~1e-7 of ||C||^2).
    """
    with full_precision(embeddings):
        x = embeddings.float()  # [B, D]
        values, inverse, counts = torch.unique(categories, return_inverse=True, return_counts=True)  # [U], [B], [U]
        keep = (counts >= min_items) & (values != 0)  # [U]
        kept = int(keep.sum())
        if kept < 2:
            return x.sum() * 0.0
        position = torch.cumsum(keep.to(torch.int64), dim=0) - 1  # [U] index among the kept categories
        row_kept = keep[inverse]  # [B]
        rows_x = x[row_kept]  # [B', D]
        group = position[inverse[row_kept]]  # [B'] in 0..K-1
        rows = counts[keep].to(x.dtype)  # [K]
        means = x.new_zeros(kept, x.shape[1]).index_add(0, group, rows_x) / rows.unsqueeze(1)  # [K, D]
        centred = rows_x - means[group]  # [B', D]
        squared = (centred @ centred.transpose(0, 1)).pow(2)  # [B', B']
        by_row = x.new_zeros(kept, squared.shape[1]).index_add(0, group, squared)  # [K, B']
        blocks = x.new_zeros(kept, kept).index_add(1, group, by_row)  # [K, K]: T
        weight = 1.0 / (rows - 1).clamp(min=1)  # [K]
        inner = blocks * weight.unsqueeze(1) * weight.unsqueeze(0)  # [K, K]: <C_a, C_b>
        major = int(rows.argmax())
        return (inner.diagonal() - 2.0 * inner[:, major] + inner[major, major]).sum().clamp(min=0.0)
