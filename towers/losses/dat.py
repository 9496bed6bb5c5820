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

    With rows centred by their category's mean, w_k = 1 / (n_k - 1), S = X_major^T X_major [D, D] and
    T_kk = ||X_k^T X_k||_F^2 = sum_{i, j in k} (x_i . x_j)^2, the expansion of the squared norms gives

        L = sum_{k != major} w_k^2 T_kk  +  (K + 1) w_major^2 ||S||_F^2  -  2 w_major sum_i w_{k(i)} x_i^T S x_i

    (the cross terms <C_k, C_major> = w_k w_major sum_{i in k} x_i^T S x_i). The within-category terms come from Gram
    blocks of the rows outside the major category (``_within_category_terms``); nothing of shape [K, D, D] or
    [K, B, D] is built, so the cost is at most B^2 * D and does not grow with the number of categories. The expansion loses
    float32 precision only when covariances nearly coincide (absolute error ~1e-7 of ||C||^2).
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
        weight = 1.0 / (rows - 1).clamp(min=1)  # [K]
        major = int(rows.argmax())
        in_major = group == major  # [B']
        major_x = centred[in_major]  # [n_major, D]
        scatter = major_x.transpose(0, 1) @ major_x  # [D, D] = S
        major_term = (kept + 1) * weight[major] ** 2 * (scatter * scatter).sum()
        cross = (weight[group] * ((centred @ scatter) * centred).sum(dim=1)).sum()  # sum_i w_k(i) x_i^T S x_i
        within = _within_category_terms(centred[~in_major], group[~in_major], weight, categories=kept)
        return (within + major_term - 2.0 * weight[major] * cross).clamp(min=0.0)


def _within_category_terms(x: torch.Tensor, group: torch.Tensor, weight: torch.Tensor, *, categories: int) -> torch.Tensor:
    """sum_k w_k^2 T_kk, T_kk = sum_{i, j in k} (x_i . x_j)^2 = ||X_k^T X_k||_F^2, over rows x [N, D] of categories
    ``group`` [N] (0..categories-1).

    A category with more rows than dimensions (n_k > D) takes its scatter matrix X_k^T X_k (n_k * D^2); the others
    take Gram blocks (n_k^2 * D), so each costs n_k * D * min(n_k, D) and the whole at most N * D^2. Blocks are
    batched: rows padded per category ([K, n_max, D], one batched matmul) or, when the padding would cost more, the
    Gram matrix of all those rows masked to same-category pairs. All paths are exact.
    """
    if x.shape[0] == 0:
        return x.sum() * 0.0
    counts = torch.bincount(group, minlength=categories)  # [K]
    large = counts > x.shape[1]  # [K]
    total = x.sum() * 0.0
    if bool(large.any()):
        rows = large[group]  # [N]
        padded, present = _padded_by_category(x[rows], group[rows])  # [K_large, n, D], [K_large]
        scatter = padded.transpose(1, 2) @ padded  # [K_large, D, D]
        total = total + ((scatter * scatter).sum(dim=(1, 2)) * weight[present] ** 2).sum()
    small = ~large[group]  # [N]
    if not bool(small.any()):
        return total
    x, group = x[small], group[small]
    present_counts = counts[~large & (counts > 0)]  # [K_small]
    longest = int(present_counts.max())
    if present_counts.shape[0] * longest * longest < x.shape[0] * x.shape[0]:
        padded, present = _padded_by_category(x, group)  # [K_small, n, D], [K_small]
        gram = padded @ padded.transpose(1, 2)  # [K_small, n, n], zero rows for the padding
        return total + ((gram * gram).sum(dim=(1, 2)) * weight[present] ** 2).sum()
    gram = x @ x.transpose(0, 1)  # [N, N]
    same = group.unsqueeze(1) == group.unsqueeze(0)  # [N, N]
    return total + ((gram * gram).masked_fill(~same, 0.0).sum(dim=1) * weight[group] ** 2).sum()


def _padded_by_category(x: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows x [N, D] of categories group [N] -> (zero-padded [K', n_max, D] over the K' categories present, their
    category ids [K'])."""
    present, compact, counts = torch.unique(group, return_inverse=True, return_counts=True)  # [K'], [N], [K']
    order = torch.argsort(compact, stable=True)  # rows by category
    sorted_group = compact[order]
    starts = torch.cumsum(counts, dim=0) - counts  # [K']
    slot = torch.arange(x.shape[0], device=x.device) - starts[sorted_group]  # [N] place within the category
    padded = x.new_zeros(present.shape[0], int(counts.max()), x.shape[1]).index_put((sorted_group, slot), x[order])
    return padded, present
