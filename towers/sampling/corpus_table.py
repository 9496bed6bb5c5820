"""The item tower's embeddings of the whole corpus, the candidates of the exact full-corpus softmax.

Two ways to get them, chosen by ``loss.corpus_refresh_steps``:

- 1 (exact): the item tower runs over every corpus item at every step, inside the autograd graph, so every item is a
  negative with its true gradient. Cost per step: one item-tower forward and backward over C items (on the bundled
  MovieLens data C = 9.7k, about 10 batches' worth of item-tower work); memory grows with C. The right choice for
  corpora up to ~100k items on a GPU and ~10-20k on a CPU.
- N > 1 (cached): the table is recomputed without gradients every N steps and, at each step, the rows of the batch's
  own items are re-embedded from their corpus features (with gradients). The item tower then learns from the batch's
  items only (positives and in-batch negatives); the other C - B negatives are up to N - 1 steps stale and push the
  queries only. Cheaper by about a factor N in item-tower work, at the price of biased item gradients.

Every row comes from the corpus features (as of the fit data's cutoff), the positives' rows included, so positives
and negatives are embedded from features of the same date.

State lives outside the ``state_dict`` (the table is rebuilt from the weights on demand).
"""

from __future__ import annotations

import torch

from towers.sampling.corpus import CorpusSampler


class CorpusEmbeddingTable:
    """Corpus embeddings [C, D] for a step: recomputed every ``refresh_steps`` calls (1: every call, with gradients)."""

    def __init__(self, refresh_steps: int = 1) -> None:
        self.refresh_steps = int(refresh_steps)
        self._cached: torch.Tensor | None = None
        self._calls = 0
        self._row_of_key: torch.Tensor | None = None

    def rows_of(self, corpus: CorpusSampler, keys: torch.Tensor) -> torch.Tensor:
        """keys [B] -> corpus rows [B] (-1 for keys absent from the corpus)."""
        if self._row_of_key is None or self._row_of_key.device != corpus.keys.device:
            size = max(int(corpus.keys.max()) if corpus.size else 0, 0) + 1
            lookup = torch.full((size,), -1, dtype=torch.int64, device=corpus.keys.device)
            valid = corpus.keys >= 0
            lookup[corpus.keys[valid]] = torch.arange(corpus.size, device=corpus.keys.device)[valid]
            self._row_of_key = lookup  # [max key + 1]
        inside = (keys >= 0) & (keys < self._row_of_key.shape[0])
        return torch.where(inside, self._row_of_key[keys.clamp(0, self._row_of_key.shape[0] - 1)], -1)  # [B]

    def embeddings(self, tower: torch.nn.Module, corpus: CorpusSampler, *, keys: torch.Tensor) -> torch.Tensor:
        """The item tower's embeddings of every corpus item [C, D]; with a cached table the rows of the batch's items
        ``keys`` [B] are embedded afresh (with gradients)."""
        features = corpus.features()
        if self.refresh_steps == 1:
            return tower(features)  # [C, D], in the graph
        if self._cached is None or self._calls % self.refresh_steps == 0:
            with torch.no_grad():
                self._cached = tower(features).detach()  # [C, D]
        self._calls += 1
        rows = torch.unique(self.rows_of(corpus, keys))  # [U]
        rows = rows[rows >= 0]
        fresh = tower({name: value[rows] for name, value in features.items()})  # [U, D]
        table = self._cached.to(fresh.dtype).clone()  # [C, D]
        table[rows] = fresh  # the batch's items fresh, with gradients
        return table

    def reset(self) -> None:
        """Forget the cached table (after loading other weights)."""
        self._cached, self._calls = None, 0
