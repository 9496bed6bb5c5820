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

- ``loss.corpus_gradient_negatives`` K > 0 (truncated backward; ``RetrievalTask.truncated_corpus_loss``): the item
  tower runs over every corpus item at every step without a graph (current weights, so the loss and the query
  tower's gradients are exact), the softmax gives the loss's gradient with respect to every row of that table, and
  only the batch's positives and the K rows with the largest gradient (``hardest_rows``) are embedded once more with
  a graph to send theirs into the item tower. The other rows' item gradients are dropped; with a sharp softmax
  (small tau) a few hundred rows carry most of the gradient (``covered`` records the share of its norm kept at
  the last step). Unlike the cached table nothing is stale, so the towers cannot tell fresh rows from old ones.
  Cost per step: one forward over C items without a graph plus a forward and backward over B + K items.

Every row comes from the corpus features (as of the fit data's cutoff), the positives' rows included, so positives
and negatives are embedded from features of the same date.

State lives outside the ``state_dict`` (the table is rebuilt from the weights on demand).
"""

from __future__ import annotations

import torch

from towers.sampling.corpus import CorpusSampler


class CorpusEmbeddingTable:
    """Corpus embeddings [C, D] for a step: recomputed every ``refresh_steps`` calls (1: every call, with gradients)."""

    def __init__(self, refresh_steps: int = 1, gradient_negatives: int = 0) -> None:
        self.refresh_steps = int(refresh_steps)
        self.gradient_negatives = int(gradient_negatives)
        self.covered = float("nan")  # truncated backward: share of the gradient's norm kept at the last step
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

    def hardest_rows(self, gradient: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """The rows [P + K] of the truncated backward: the batch's positive rows ``positives`` [B] (each once) and the
        ``gradient_negatives`` K other rows whose gradient [C, D] has the largest norm."""
        with torch.no_grad():
            norms = gradient.norm(dim=1)  # [C]
            unique = torch.unique(positives[positives >= 0])  # [P]
            total = float(norms.sum())
            ranked = norms.clone()
            ranked[unique] = float("inf")  # always kept: a positive's gradient is its pull towards the query
            count = min(int(ranked.shape[0]), int(unique.shape[0]) + self.gradient_negatives)
            rows = torch.topk(ranked, count, sorted=False).indices  # [P + K]
            self.covered = float(norms[rows].sum()) / total if total > 0 else 1.0
        return rows

    def reset(self) -> None:
        """Forget the cached table (after loading other weights)."""
        self._cached, self._calls = None, 0
