"""ItemKNN: cosine similarity of item columns of the binary user x item matrix, top-k neighbours per item.

    S[i, j] = |U_i & U_j| / sqrt(|U_i| |U_j|), S[i, i] = 0, row i keeps item i's ``neighbours`` most similar items;
    score = history @ S

The similarity is never held whole: the co-counts of a block of items come from a sparse product (scipy CSR),
each block row is truncated to its neighbours and kept sparse, so memory is one block (``BLOCK_ENTRIES`` floats)
plus the kept neighbours (about items x neighbours), whatever the number of users and items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from towers.errors import TowersInputError
from towers.evaluation.item_space import ItemSpace, LinearItemModel, check_fit_codes

BLOCK_ENTRIES = 1 << 24  # similarity entries per block of item rows (64 MiB of float32)


class ItemKNN(LinearItemModel):
    """Item-based nearest neighbours on cosine similarity of the binary user x item matrix."""

    def __init__(self, *, neighbours: int = 100) -> None:
        super().__init__()
        if neighbours < 1:
            raise TowersInputError(f"ItemKNN needs neighbours >= 1, got {neighbours}")
        self.neighbours = int(neighbours)

    def fit(
        self, user_codes: Any, *, item_codes: Any, n_users: int, n_items: int, times_s: Any = None
    ) -> ItemKNN:
        users, items = check_fit_codes(user_codes, item_codes, n_users=n_users, n_items=n_items)
        self.space = ItemSpace.seen(items, n_items=n_items)
        matrix = self.space.user_item_matrix(users, items)  # CSR (U', F)
        self.weights = neighbour_weights(matrix, neighbours=self.neighbours)  # CSR (F, F)
        return self


def neighbour_weights(matrix: sp.csr_matrix, *, neighbours: int, block_entries: int = BLOCK_ENTRIES) -> sp.csr_matrix:
    """CSR float32 [F, F]: row i holds item i's ``neighbours`` most similar items (cosine of the columns of the
    binary matrix [U, F]), with the tie rule of :func:`truncate_neighbours`; computed a block of rows at a time."""
    n_items = matrix.shape[1]
    columns = matrix.T.tocsr()  # (F, U): row i lists the users of item i
    counts = torch.from_numpy(np.diff(columns.indptr).astype(np.float32))  # (F,) users per item
    norms = counts.clamp_min(1e-12).sqrt()  # (F,)
    rows_per_block = max(1, block_entries // max(n_items, 1))
    blocks = []
    for begin in range(0, n_items, rows_per_block):
        end = min(begin + rows_per_block, n_items)
        co_counts = torch.from_numpy((columns[begin:end] @ matrix).toarray())  # (b, F) float32, exact integers
        similarity = co_counts / norms[begin:end, None] / norms[None, :]  # (b, F)
        similarity[torch.arange(end - begin), torch.arange(begin, end)] = 0.0  # zero diagonal
        blocks.append(sp.csr_matrix(truncate_neighbours(similarity, neighbours=neighbours).numpy()))
    return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, 0), dtype=np.float32)


def truncate_neighbours(similarity: torch.Tensor, *, neighbours: int) -> torch.Tensor:
    """Keep, in each row i of similarity [R, F], item i's ``neighbours`` most similar items; zero the rest.

    Row i then spreads history item i's score over its neighbours: scores = history [B, F] @ result [F, F].
    Items tied with the k-th neighbour share the slots left after the strictly more similar ones: each keeps its
    similarity times slots / tied, the expectation of picking them uniformly at random. Any fixed order (item
    code, position) would instead make the figures depend on how items happen to be encoded; rare items have many
    such ties (cosine 1 / sqrt(d_j) for every item j of one user).
    """
    k = min(neighbours, similarity.shape[1])
    kth = similarity.topk(k, dim=1).values[:, -1:]  # (R, 1) similarity of the k-th neighbour
    above = similarity > kth  # (R, F)
    tied = similarity == kth  # (R, F)
    slots = k - above.sum(dim=1, keepdim=True)  # (R, 1) places left for the tied items
    share = slots.to(similarity.dtype) / tied.sum(dim=1, keepdim=True).to(similarity.dtype)  # (R, 1) in (0, 1]
    return torch.where(above, similarity, torch.where(tied, similarity * share, 0.0))  # (R, F)
