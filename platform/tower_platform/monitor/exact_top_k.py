"""Exact top-K by inner product over every item, in blocks: a bfloat16 screen, then exact rescoring of candidates.

For each block of ``query_chunk`` queries and chunk of ``item_chunk`` items:

1. **screen**: S~ = bf16(Q) @ bf16(X)^T, one GEMM (bfloat16 in, float32 accumulation, bfloat16 out). Every screened
   score is within a bound computed from the rounding residuals of q and x of the exact q . x (derivation below);
2. **cut**: t_q = the K-th best exact score found so far for query q is a lower bound of q's final K-th score, so
   an item screening below f(t_q - e) (see below) can never enter q's top-K. The others are the candidates (while
   fewer than K exact scores are known, the cut comes from the chunk itself: its K-th largest screened score gives a
   lower bound of the chunk's exact K-th score);
3. **rescore** the candidates exactly (float32 dot products of the float32 vectors, the same rounding as a float32
   GEMM, covered by the bound below) and merge them into the running top-K (a scatter and a topk of a (B, K + m)
   block; no Python loop over queries or items). The first chunk of each query block is scored exactly (one float32
   GEMM and a topk): its K best give the first lower bounds.

The top-K is therefore the exact top-K of the float32 vectors; the screen only decides which scores get computed
twice. Candidates are found without scanning a boolean matrix: the screened block is reduced to its maximum per
group of ``GROUP`` items, only groups whose maximum passes the cut are opened.

Error bound of the screen. Write q~ = bf16(q) = q + dq and x~ = bf16(x) = x + dx (the rounding residuals, known
exactly). Then q~ . x~ - q . x = q~ . dx + dq . x~ - dq . dx, so before the GEMM's own rounding

    |q~ . x~ - q . x| <= e(q, x) = ||q~|| ||dx|| + ||dq|| ||x~|| + ||dq|| ||dx|| + (D + 1) 2^-24 ||q~|| ||x~||,

the last term bounding the float32 accumulation of the D exact bfloat16 products (Cauchy-Schwarz on
sum |q~_i x~_i|); it is counted twice, since t itself comes from float32 rescoring with the same rounding bound. The result is rounded to bfloat16, |S~ - a| <= u |a| with u = 2^-8, and f(a) = a - u |a| is
increasing, so an item with exact score s >= t has S~ >= f(t - e). The cut of a query is therefore f(t - e) with
the chunk's largest ||dx||, ||x~|| in e; and since a >= S~ / (1 + u sign S~), the chunk's K-th largest screened score
S~_(K) gives the lower bound t = S~_(K) / (1 + u sign S~_(K)) - e of the chunk's exact K-th score. For unit vectors
in 64-d, e is about 0.004 (||dx|| averages 0.0017, at most 0.0026; a coordinate-wise bound would give 2^-7).

Where bfloat16 GEMMs are not native (no AVX512-BF16 / AMX) the screen runs on the float32 vectors themselves:
dq = dx = 0, u = 2^-24, and the algorithm is the same.

Memory: one (query_chunk, item_chunk) screened block, a bfloat16 copy of the item matrix and the running (Q_chunk,
K) top-K; never a queries x items matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

QUERY_CHUNK = 1024
ITEM_CHUNK = 32_768
GROUP = 64  # items per group of the candidate search (ITEM_CHUNK is a multiple of it)


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX); else the screen is float32."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return True
    return False


def output_rounding(dtype: torch.dtype) -> float:
    """Unit roundoff of the screened block's dtype (2^-8 for bfloat16, 2^-24 for float32)."""
    return 2.0**-8 if dtype == torch.bfloat16 else 2.0**-24


def _screen_dtype(dimension: int, screen: str | None) -> torch.dtype:
    if screen == "float32":
        return torch.float32
    if screen == "bfloat16" or (screen is None and native_bfloat16()):
        return torch.bfloat16
    return torch.float32


def _order_keys(block: torch.Tensor, *, positive_cut: bool = False) -> torch.Tensor:
    """Integers that sort like the block's float values (int16 for bfloat16, int32 for float32).

    With ``positive_cut`` the raw bit patterns are returned: they sort like the values among non-negative values and
    put every negative value below every positive one, which is all a positive cut needs (and costs no pass).
    """
    bits = block.view(torch.int16 if block.dtype == torch.bfloat16 else torch.int32)
    if positive_cut:
        return bits
    mask = torch.bitwise_and(torch.bitwise_right_shift(bits, bits.element_size() * 8 - 1),
                             torch.iinfo(bits.dtype).max)
    return torch.bitwise_xor(bits, mask)  # negative floats: flip the magnitude bits so that the order holds


def _cut_keys(cut: torch.Tensor, dtype: torch.dtype, *, positive_cut: bool) -> torch.Tensor:
    """(B,) keys of float64 cuts rounded DOWN to ``dtype``, so that the rounding never drops a candidate."""
    rounded = cut.to(dtype)
    keys = _order_keys(rounded.contiguous(), positive_cut=positive_cut).clone()
    keys[rounded.double() > cut] -= 1  # one step down: adjacent keys are adjacent values
    return keys


def _candidates(keys: torch.Tensor, cut: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of every entry of the (B, W) key block at or above its row's cut key, via group maxima."""
    b, width = keys.shape
    grouped = keys.view(b, width // group, group)  # (B, W / group, group)
    hot_rows, hot_groups = (grouped.amax(dim=2) >= cut[:, None]).nonzero(as_tuple=True)  # (h,)
    inside = grouped[hot_rows, hot_groups] >= cut[hot_rows, None]  # (h, group)
    which, offset = inside.nonzero(as_tuple=True)
    return hot_rows[which], hot_groups[which] * group + offset


class _Screen:
    """The item side, prepared once: float32 vectors (for rescoring), the screened copy, norms and residual norms."""

    def __init__(self, item_vectors: np.ndarray, *, screen: str | None) -> None:
        self.exact = torch.from_numpy(np.ascontiguousarray(item_vectors, dtype=np.float32))  # (N, D)
        self.dtype = _screen_dtype(self.exact.shape[1], screen)
        self.screened = self.exact.to(self.dtype) if self.dtype != torch.float32 else self.exact  # (N, D)
        self.screened_norms, self.residual_norms = _norms(self.exact, self.screened)  # (N,), (N,)
        # the float32 accumulation of the screen, and the float32 rescoring that t comes from (D + 1) 2^-24 each
        self.accumulation = 2 * (self.exact.shape[1] + 1) * 2.0**-24
        self.u = output_rounding(self.dtype)

    def chunk_bound(self, i0: int, i1: int) -> tuple[float, float]:
        """The chunk's largest ||x~|| and ||dx||."""
        return float(self.screened_norms[i0:i1].max()), float(self.residual_norms[i0:i1].max())


def _norms(exact: torch.Tensor, screened: torch.Tensor, rows: int = 65_536) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) upper bounds of ||v~|| and ||v~ - v|| (float32 sums of squares, raised by their own rounding bound).

    v~ - v is exact in float32 (v~ is v rounded to fewer bits); the sum of D squares errs by at most D 2^-24
    relative, which the factor covers.
    """
    raise_by = 1 + (exact.shape[1] + 2) * 2.0**-24
    norms = torch.empty(exact.shape[0], dtype=torch.float64)
    residuals = torch.empty(exact.shape[0], dtype=torch.float64)
    for r0 in range(0, exact.shape[0], rows):  # no float32 copy of the whole screened matrix
        widened = screened[r0 : r0 + rows].float()
        norms[r0 : r0 + rows] = torch.linalg.vector_norm(widened, dim=1) * raise_by
        residuals[r0 : r0 + rows] = torch.linalg.vector_norm(widened - exact[r0 : r0 + rows], dim=1) * raise_by
    return norms, residuals


class _RunningTopK:
    """The exact top-K of a block of queries so far, and the candidates waiting to be merged into it."""

    def __init__(self, n_rows: int, k: int) -> None:
        self.k = k
        self.scores = torch.full((n_rows, k), -torch.inf)  # (B, K) best first
        self.items = torch.full((n_rows, k), -1, dtype=torch.int64)  # (B, K)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._n_pending = 0

    @property
    def kth(self) -> torch.Tensor:
        """(B,) the K-th best exact score merged so far: a lower bound of each query's final K-th score."""
        return self.scores[:, -1].double()

    def add(self, rows: torch.Tensor, items: torch.Tensor, scores: torch.Tensor) -> None:
        """Candidates of one chunk, ``rows`` in non-decreasing order."""
        self._pending.append((rows, items, scores))
        self._n_pending += int(rows.numel())
        if 8 * self._n_pending >= self.scores.numel():  # a merge costs about B x K; merging sooner keeps the cut
            self.merge()  # fresh (600 -> 500 candidates per query at 1M items), merging later saves merges

    def merge(self) -> None:
        """Scatter the pending candidates after the current K of each row, keep the K best (no sort of them)."""
        if not self._pending:
            return
        b, k = self.scores.shape
        filled = torch.zeros(b, dtype=torch.int64)  # (B,) candidates placed per row so far
        placed = []
        for rows, items, scores in self._pending:  # each part is sorted by row: its rank within a row is direct
            counts = torch.bincount(rows, minlength=b)
            starts = torch.cumsum(counts, 0) - counts
            placed.append((rows, items, scores, torch.arange(rows.numel()) - starts[rows] + filled[rows]))
            filled += counts
        self._pending, self._n_pending = [], 0
        width = k + int(filled.max())
        merged_scores = torch.full((b, width), -torch.inf)  # (B, K + m)
        merged_items = torch.full((b, width), -1, dtype=torch.int64)
        merged_scores[:, :k], merged_items[:, :k] = self.scores, self.items
        for rows, items, scores, position in placed:
            merged_scores[rows, k + position], merged_items[rows, k + position] = scores, items
        self.scores, where = torch.topk(merged_scores, k, dim=1)  # (B, K)
        self.items = merged_items.gather(1, where)


@dataclass(frozen=True, eq=False)
class _QueryBlock:
    """One block of queries: float32 and screened vectors, their norms, and their history as (row, item) pairs."""

    exact: torch.Tensor  # (B, D) float32
    screened: torch.Tensor  # (B, D)
    norms: torch.Tensor  # (B,) ||q~||
    residuals: torch.Tensor  # (B,) ||q~ - q||
    history_rows: torch.Tensor  # (h,) local query row
    history_items: torch.Tensor  # (h,) item row

    def exclude_history(self, scores: torch.Tensor, i0: int, i1: int) -> None:
        inside = (self.history_items >= i0) & (self.history_items < i1)
        scores[self.history_rows[inside], self.history_items[inside] - i0] = -torch.inf


def _query_block(queries, q0: int, q1: int, dtype: torch.dtype) -> _QueryBlock:
    exact = torch.from_numpy(np.ascontiguousarray(queries.vectors[q0:q1], dtype=np.float32))  # (B, D)
    screened = exact.to(dtype)
    norms, residuals = _norms(exact, screened)
    indptr = queries.history_indptr
    lengths = np.diff(indptr[q0 : q1 + 1])
    return _QueryBlock(
        exact, screened, norms, residuals,
        torch.from_numpy(np.repeat(np.arange(q1 - q0), lengths)),
        torch.from_numpy(np.asarray(queries.history_indices[indptr[q0] : indptr[q1]], dtype=np.int64)),
    )


def _seed(block: _QueryBlock, items: _Screen, best: _RunningTopK, first: int) -> None:
    """The exact top-K of the first ``first`` items (one float32 GEMM): the lower bounds the screen starts from."""
    scores = block.exact @ items.exact[:first].T  # (B, first)
    block.exclude_history(scores, 0, first)
    kk = min(best.k, first)
    values, where = torch.topk(scores, kk, dim=1)
    best.scores[:, :kk], best.items[:, :kk] = values, where


def _screened_candidates(block: _QueryBlock, items: _Screen, best: _RunningTopK, scores: torch.Tensor, i0: int,
                         i1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item) of every item of [i0, i1) that can still enter its query's top-K (``scores``: the screened
    block, padded with -inf to whole groups)."""
    x_norm, x_residual = items.chunk_bound(i0, i1)
    error = (block.norms * x_residual + block.residuals * (x_norm + x_residual)
             + items.accumulation * block.norms * x_norm + 1e-30)  # (B,) e(q, x) in this chunk
    lower = best.kth.clone()  # (B,) lower bound of each final K-th score; -inf while fewer than K are known
    unknown = torch.isinf(lower)
    if unknown.any():  # from the chunk's own K-th screened score
        kth = torch.topk(scores[unknown].float(), min(best.k, i1 - i0), dim=1).values[:, -1].double()
        lower[unknown] = kth / (1 + items.u * torch.sign(kth)) - error[unknown]
    reach = lower - error
    cut = reach - items.u * reach.abs()  # f(t - e): no item of the final top-K screens below it
    positive = bool((cut > 0).all())
    rows, cols = _candidates(_order_keys(scores, positive_cut=positive),
                             _cut_keys(cut, items.dtype, positive_cut=positive), GROUP)
    if not positive:  # a cut of -inf lets the padding and the excluded history through
        keep = (cols < i1 - i0) & (scores[rows, cols.clamp(max=scores.shape[1] - 1)] > -torch.inf)
        rows, cols = rows[keep], cols[keep]
    return rows, cols + i0


def top_k_items(
    queries,
    item_vectors: np.ndarray,
    *,
    k: int,
    query_chunk: int = QUERY_CHUNK,
    item_chunk: int = ITEM_CHUNK,
    screen: str | None = None,
) -> np.ndarray:
    """(Q, K) item rows of each query's exact top-K by dot product, best first; -1 pads rows with fewer candidates.

    ``queries`` is a :class:`tower_platform.monitor.alignment.QuerySet` (its history rows are excluded from its
    ranking). ``screen``: "bfloat16", "float32" or None (bfloat16 where the CPU has native bfloat16 GEMMs).
    """
    items = _Screen(item_vectors, screen=screen)
    n_items = items.exact.shape[0]
    k = int(min(k, n_items))
    top = np.full((len(queries), k), -1, dtype=np.int64)  # (Q, K)
    if k == 0 or len(queries) == 0:
        return top
    item_chunk = max(GROUP, item_chunk - item_chunk % GROUP)
    first = min(item_chunk, n_items)
    buffer = torch.empty((min(query_chunk, len(queries)), item_chunk), dtype=items.dtype)  # reused: fresh pages
    for q0 in range(0, len(queries), query_chunk):  # for every block would cost as much as the GEMM itself
        q1 = min(q0 + query_chunk, len(queries))
        block = _query_block(queries, q0, q1, items.dtype)
        best = _RunningTopK(q1 - q0, k)
        _seed(block, items, best, first)
        for i0 in range(first, n_items, item_chunk):
            i1 = min(i0 + item_chunk, n_items)
            width = -(-(i1 - i0) // GROUP) * GROUP  # whole groups
            scores = buffer[: q1 - q0, :width]
            if width == i1 - i0 and q1 - q0 == buffer.shape[0]:
                torch.mm(block.screened, items.screened[i0:i1].T, out=scores)  # (B, W)
            else:
                scores.fill_(-torch.inf)
                scores[:, : i1 - i0] = block.screened @ items.screened[i0:i1].T
            block.exclude_history(scores, i0, i1)
            rows, cols = _screened_candidates(block, items, best, scores, i0, i1)
            best.add(rows, cols, torch.einsum("cd,cd->c", block.exact.index_select(0, rows),
                                              items.exact.index_select(0, cols)))  # exact scores
        best.merge()
        chosen = best.items.clone()
        chosen[torch.isinf(best.scores)] = -1  # excluded or missing candidates
        top[q0:q1] = chosen.numpy()
    return top


def target_ranks(top: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(Q,) 1-based rank of each target within its top-K row; 0 when it is not in the top-K."""
    hit = top == np.asarray(targets)[:, None]  # (Q, K)
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0).astype(np.int64)
