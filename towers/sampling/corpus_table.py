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
  only the batch's positives, the K/2 rows with the largest gradient and K/2 rows drawn in proportion to their
  gradient's norm (importance-weighted, so the item gradient is unbiased; ``gradient_rows``) are embedded once more
  with a graph to send theirs into the item tower. Nothing is stale, so the towers cannot tell fresh rows from old
  ones. Dropping the small gradients instead of sampling them is biased and fails: with only the hardest 256 rows
  the bundled data's validation R@100 fell to .09 (the many small pushes away from the queries are what keeps the
  items apart). ``covered`` records the share of the gradient's norm in the deterministic rows at the last step.
  Cost per step: one forward over C items without a graph plus a forward and backward over B + K items.
- Both (``corpus_refresh_steps`` N > 1 with ``corpus_gradient_negatives`` K > 0; ``values``): the table without a
  graph is recomputed every N steps; in between, the rows of the batch's positives are re-embedded (without a graph)
  before the loss, and the rows the truncated backward re-embeds with a graph are written back after it
  (``remember``), so the positives and the hardest negatives are current and only the others are up to N - 1 steps
  old. The loss and the query gradients are then exact up to that staleness, and the item gradient stays the
  unbiased draw of the truncated backward (unlike the cached mode above, whose item tower sees the batch only).
  Cost per step: a forward over C / N items (amortised) plus a forward over B and a forward and backward over B + K.

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
        self._refresh_when_due(tower, features)
        rows = torch.unique(self.rows_of(corpus, keys))  # [U]
        rows = rows[rows >= 0]
        fresh = tower({name: value[rows] for name, value in features.items()})  # [U, D]
        table = self._cached.to(fresh.dtype).clone()  # [C, D]
        table[rows] = fresh  # the batch's items fresh, with gradients
        return table

    def values(self, tower: torch.nn.Module, corpus: CorpusSampler, rows: torch.Tensor) -> torch.Tensor:
        """The table [C, D] of the truncated backward, without a graph: the item tower over every corpus item at the
        first call and every ``refresh_steps`` calls after it (every call when 1); in between the cached table with
        the positives' rows ``rows`` [B] (-1: absent) re-embedded with the current weights."""
        features = corpus.features()
        with torch.no_grad():
            if self.refresh_steps == 1:
                return tower(features)  # [C, D], nothing kept between steps
            if not self._refresh_when_due(tower, features):
                unique = torch.unique(rows[rows >= 0])  # [P]
                fresh = tower({name: value[unique] for name, value in features.items()})  # [P, D]
                self._cached[unique] = fresh.to(self._cached.dtype)
        return self._cached

    def _refresh_when_due(self, tower: torch.nn.Module, features: dict[str, torch.Tensor]) -> bool:
        """Recompute the cached table [C, D] without a graph at the first call and every ``refresh_steps`` calls
        after it; True when it did."""
        due = self._cached is None or self._calls % self.refresh_steps == 0
        if due:
            with torch.no_grad():
                self._cached = tower(features).detach()  # [C, D]
        self._calls += 1
        return due

    def remember(self, rows: torch.Tensor, fresh: torch.Tensor) -> None:
        """Write the re-embedded rows ``rows`` [R] (their values ``fresh`` [R, D]) into a cached table, so that the
        next steps score the hardest negatives with their current embeddings (nothing to do when the table is
        recomputed at every step)."""
        if self.refresh_steps > 1 and self._cached is not None:
            with torch.no_grad():
                self._cached[rows] = fresh.detach().to(self._cached.dtype)

    def gradient_rows(self, gradient: torch.Tensor, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows [R] of the truncated backward and the weight [R] of each row's gradient: the batch's positive rows
        ``positives`` [B] (each once, weight 1), the K/2 other rows whose gradient [C, D] has the largest norm
        (weight 1), and K - K/2 draws from the remaining rows in proportion to their gradient's norm, each drawn row
        weighted by (its draws) * S / (draws * its norm), S the remaining rows' total norm, so that the sum of the
        weighted gradients is an unbiased estimate of the remaining rows' sum. Every draw then carries the same
        norm S / draws: the variance stays bounded however the gradient is spread."""
        with torch.no_grad():
            norms = gradient.norm(dim=1)  # [C]
            size = int(norms.shape[0])
            unique = torch.unique(positives[positives >= 0])  # [P]
            ranked = norms.clone()
            ranked[unique] = float("inf")  # always kept: a positive's gradient is its pull towards the query
            top = min(size, int(unique.shape[0]) + self.gradient_negatives // 2)
            kept = torch.topk(ranked, top, sorted=False).indices  # [P + K/2]
            rest = torch.ones(size, dtype=torch.bool, device=norms.device)
            rest[kept] = False
            rest_norms = torch.where(rest, norms, torch.zeros_like(norms))  # [C]
            remaining = float(rest_norms.sum())
            draws = self.gradient_negatives - self.gradient_negatives // 2
            weights = torch.ones(top, dtype=gradient.dtype, device=gradient.device)  # [P + K/2]
            rows = kept
            if draws > 0 and remaining > 0:
                drawn = torch.multinomial(rest_norms, draws, replacement=True)  # [M]
                sampled, counts = torch.unique(drawn, return_counts=True)  # [U], [U]
                sampled_weights = counts.to(gradient.dtype) * remaining / (draws * norms[sampled])  # [U]
                rows = torch.cat([kept, sampled])
                weights = torch.cat([weights, sampled_weights])
            total = float(norms.sum())
            self.covered = float(norms[kept].sum()) / total if total > 0 else 1.0
        return rows, weights

    def reset(self) -> None:
        """Forget the cached table (after loading other weights)."""
        self._cached, self._calls = None, 0
