"""How the retrieval task sees the rows of the other processes of a data-parallel run (a seam; identity here).

In one process the batch is all there is, and every method below returns its input. Under DistributedDataParallel
(``towers/training/distributed.py``) each of W ranks holds B rows of a global batch of W * B, and the task asks:

    rows(x)         x [B, ...] -> [W * B, ...]: every rank's rows in rank order, WITH gradients (the backward pass
                    returns to each rank the gradient of its own rows, summed over the ranks that used them)
    values(x)       the same without gradients (item keys, category ids, detached embeddings)
    local_first(x)  [W * B, ...] in rank order -> this rank's B rows first, then the ranks after it, then those before
                    (a rotation): the positive of local row i stays candidate i, which is the single-process layout
                    with the labels offset by rank * B

The task decides what goes through ``rows`` / ``values`` and what stays local; the module docstring of
``towers/training/distributed.py`` lists each term and why.
"""

from __future__ import annotations

import torch


class BatchGather:
    """One process: the local batch is the global batch (every method is the identity)."""

    world_size: int = 1
    rank: int = 0

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, ...] -> every rank's rows [W * B, ...] in rank order, differentiable."""
        return x

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, ...] -> every rank's rows [W * B, ...] in rank order, without gradients."""
        return x

    def local_first(self, x: torch.Tensor) -> torch.Tensor:
        """x [W * B, ...] in rank order -> the same rows with this rank's block first."""
        return x


LOCAL = BatchGather()
