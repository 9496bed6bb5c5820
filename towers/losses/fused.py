"""The softmax cross-entropy over a matrix of scores in one autograd node, its gradients computed in the forward.

With thousands of candidates per step (mixed negatives, the full corpus) the [B, N] logit matrix is the largest
tensor of a training step, and on a CPU its passes through memory cost more than the matmul that makes it: composed
from stock ops (matmul, accidental-hit mask, excluded mask, log_softmax, nll, then their backwards) a step allocated
six [B, N] tensors and made a dozen passes over them; at B = 1024, N = 5120 that was three quarters of the step
(``ops/bench/train_profile.py``). ``scored_cross_entropy`` computes the same loss and gradients a block of R rows at
a time (R * N bounded, see ``_BLOCK_ELEMENTS``), so that no [B, N] tensor outlives its block and the passes after
the matmul are done in place:

    per block  S = Q_r C^T + b (one addmm), S[mask] = -inf (in place), m_i = max_j S_ij, P = exp(max(S - m, -80)) / Z
               (in place), L_i = m_i + log Z_i - S_i,y_i, then the gradients of L = (1/B) sum_i r_i L_i:
               dS = (r_i / B) (P - onehot(y)) (in place in P), dQ_r = dS C, dC += dS^T Q_r, db += sum_i dS_i
    backward   the saved dQ, dC, db (and dr_i = L_i / B) times the incoming gradient

so the backward is three scalings; the gradients of an input that needs none are not computed. Masked scores are
exactly -inf, so their softmax is exactly 0 and they get no gradient, as with ``masked_fill``. A row whose positive is
masked has an infinite loss, as ``F.cross_entropy`` would give it. Everything runs in float32 with autocast off, so
the loss is the one ``weighted_cross_entropy`` gives within float rounding; ``matmul="bfloat16"`` (or "auto" on
hardware that multiplies it natively; ``loss.softmax_matmul``) rounds only the three matmuls' inputs and results,
1.4-1.7x faster at 5k-30k columns on an AVX512-BF16 CPU for about 0.3% relative error in the gradients.

``scored_cross_entropy_and_candidate_gradient`` also returns dL/dC [N, D] (not differentiable): the exact
full-corpus softmax with a truncated backward (``loss.corpus_gradient_negatives``) scores a corpus table embedded
without a graph, then picks the rows whose gradient is largest and sends it into the item tower with ``inject``.
"""

from __future__ import annotations

from typing import Any

import torch

_FLOOR = -80.0  # the lowest S - m kept (see _forward_and_gradients)
# R * N per block. On CPU 2^24 (64 MiB of float32): ops/bench/fused_softmax.py --sweep measured 2^18 (1 MiB, a
# cache-sized block) at 0.58-0.85x of one block at N 5k-30k; from 2^22 on, blocks run level with one block within the
# run-to-run noise (about +-10% on 2 cores), and still bound the transient memory of a large corpus.
_BLOCK_ELEMENTS = {"cpu": 1 << 24, "default": 1 << 26}


def _block_rows(rows: int, columns: int, device: torch.device) -> int:
    elements = _BLOCK_ELEMENTS["cpu" if device.type == "cpu" else "default"]
    return max(16, min(rows, elements // max(columns, 1)))


def _forward_and_gradients(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    weights: torch.Tensor | None,
    mask: torch.Tensor | None,
    *,
    need: tuple[bool, bool, bool],
    matmul: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(loss, per-example losses [B], dL/dQ [B, D], dL/dC [N, D], dL/db [N]), the gradients where ``need``
    (queries, candidates, bias) asks for them, else None. ``matmul`` bfloat16: the three matmuls take bfloat16
    inputs (float32 accumulation, bfloat16 results, everything else float32)."""
    rows, columns = queries.shape[0], candidates.shape[0]
    need_q, need_c, need_b = need
    any_gradient = need_q or need_c or need_b
    per_example = torch.empty(rows, dtype=queries.dtype, device=queries.device)  # [B]
    d_queries = torch.empty_like(queries) if need_q else None  # [B, D]
    d_candidates = torch.zeros_like(candidates) if need_c else None  # [N, D]
    d_bias = torch.zeros(columns, dtype=queries.dtype, device=queries.device) if need_b else None  # [N]
    scale = torch.full((rows,), 1.0 / rows, dtype=queries.dtype, device=queries.device) if weights is None \
        else weights / rows  # [B] r_i / B
    low = matmul != torch.float32
    factors = candidates.to(matmul) if low else candidates  # [N, D]
    transposed = factors.transpose(0, 1)  # [D, N]
    step = _block_rows(rows, columns, queries.device)
    for start in range(0, rows, step):
        end = min(start + step, rows)
        block_queries, block_labels = queries[start:end], labels[start:end]  # [R, D], [R]
        if low:
            block_factors = block_queries.to(matmul)  # [R, D]
            scores = (block_factors @ transposed).float()  # [R, N]
            if bias is not None:
                scores.add_(bias)
        else:
            block_factors = block_queries
            scores = block_queries @ transposed if bias is None else torch.addmm(bias, block_queries, transposed)
        if mask is not None:
            scores.masked_fill_(mask[start:end], float("-inf"))
        positive = scores.gather(1, block_labels.unsqueeze(1)).squeeze(1)  # [R]
        top = scores.amax(dim=1, keepdim=True)  # [R, 1]
        # exp of S - m below -80 would be a subnormal float, which the CPU multiplies ~20x slower: floor it at
        # exp(-80) ~ 1.8e-35 (a change below float32's resolution of the row sum), then put the masked zeros back
        probabilities = scores.sub_(top).clamp_(min=_FLOOR).exp_()  # [R, N] unnormalised, in place
        if mask is not None:
            probabilities.masked_fill_(mask[start:end], 0.0)
        total = probabilities.sum(dim=1, keepdim=True)  # [R, 1]
        per_example[start:end] = (top + total.log()).squeeze(1) - positive  # logsumexp - positive score
        if not any_gradient:
            continue
        block_scale = scale[start:end]  # [R]
        d_scores = probabilities.mul_((block_scale.unsqueeze(1) / total))  # [R, N] (r_i / B) softmax, in place
        d_scores[torch.arange(end - start, device=labels.device), block_labels] -= block_scale
        factor_scores = d_scores.to(matmul) if low else d_scores  # [R, N]
        if d_queries is not None:
            if low:
                d_queries[start:end] = factor_scores @ factors  # [R, D]
            else:
                torch.mm(d_scores, candidates, out=d_queries[start:end])  # [R, D]
        if d_candidates is not None:
            if low:
                d_candidates.add_(factor_scores.transpose(0, 1) @ block_factors)  # [N, D]
            else:
                d_candidates.addmm_(d_scores.transpose(0, 1), block_queries)  # [N, D]
        if d_bias is not None:
            d_bias.add_(d_scores.sum(dim=0))  # [N]
    loss = (per_example if weights is None else per_example * weights).sum() / rows
    return loss, per_example, d_queries, d_candidates, d_bias


class _ScoredCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        queries: torch.Tensor,
        candidates: torch.Tensor,
        bias: torch.Tensor | None,
        labels: torch.Tensor,
        weights: torch.Tensor | None,
        mask: torch.Tensor | None,
        matmul: torch.dtype,
    ) -> torch.Tensor:
        loss, per_example, d_queries, d_candidates, d_bias = _forward_and_gradients(
            queries, candidates, bias, labels, weights, mask, need=tuple(ctx.needs_input_grad[:3]), matmul=matmul)
        ctx.save_for_backward(d_queries, d_candidates, d_bias, per_example)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        d_queries, d_candidates, d_bias, per_example = ctx.saved_tensors
        rows = per_example.shape[0]
        return (
            None if d_queries is None else d_queries * grad,
            None if d_candidates is None else d_candidates * grad,
            None if d_bias is None else d_bias * grad,
            None,
            per_example * (grad / rows) if ctx.needs_input_grad[4] else None,
            None,
            None,
        )


class _ScoredCrossEntropyAndCandidateGradient(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        queries: torch.Tensor,
        candidates: torch.Tensor,
        bias: torch.Tensor | None,
        labels: torch.Tensor,
        weights: torch.Tensor | None,
        matmul: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, per_example, d_queries, d_candidates, d_bias = _forward_and_gradients(
            queries, candidates, bias, labels, weights, None, need=(ctx.needs_input_grad[0], True,
                                                                   ctx.needs_input_grad[2]), matmul=matmul)
        ctx.save_for_backward(d_queries, d_candidates, d_bias, per_example)
        ctx.mark_non_differentiable(d_candidates)
        return loss, d_candidates

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor, _: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        d_queries, d_candidates, d_bias, per_example = ctx.saved_tensors
        rows = per_example.shape[0]
        return (
            None if d_queries is None else d_queries * grad,
            d_candidates * grad if ctx.needs_input_grad[1] else None,
            None if d_bias is None else d_bias * grad,
            None,
            per_example * (grad / rows) if ctx.needs_input_grad[4] else None,
            None,
        )


class _Inject(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, loss: torch.Tensor, values: torch.Tensor, gradient: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(gradient)
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (gradient,) = ctx.saved_tensors
        return grad, gradient * grad, None


def _float32(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.float()


MATMUL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MATMUL_CHOICES = ("auto", *MATMUL_DTYPES)


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (a CUDA device that supports it; a CPU with
    AVX512-BF16 or AMX). Elsewhere bfloat16 matmuls are emulated and slower than float32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(bool(check()) for check in checks if check is not None)
    return False


def _matmul_dtype(matmul: str, device: torch.device) -> torch.dtype:
    """The dtype of ``matmul`` ("auto": bfloat16 where ``fast_bfloat16``, else float32)."""
    if matmul not in MATMUL_CHOICES:
        raise ValueError(f"matmul {matmul!r}: expected one of {', '.join(map(repr, MATMUL_CHOICES))}")
    if matmul == "auto":
        return torch.bfloat16 if fast_bfloat16(device) else torch.float32
    return MATMUL_DTYPES[matmul]


def scored_cross_entropy(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    matmul: str = "float32",
) -> torch.Tensor:
    """(1/B) sum_i r_i CE(softmax_j(<q_i, c_j> + b_j, -inf where mask), y_i): queries [B, D], candidates [N, D],
    labels [B] (each row's positive column), bias [N], weights [B] (r_i), mask bool [B, N] -> scalar, float32.
    ``matmul`` "bfloat16": the score and gradient matmuls round their inputs and results to bfloat16 (about 0.3%
    relative error in the gradients; the softmax itself stays float32); "auto": bfloat16 where the device multiplies
    it in hardware (``fast_bfloat16``), else float32."""
    dtype = _matmul_dtype(matmul, queries.device)
    with torch.autocast(device_type=queries.device.type, enabled=False):
        return _ScoredCrossEntropy.apply(
            queries.float(), candidates.float(), _float32(bias), labels, _float32(weights), mask, dtype,
        )


def scored_cross_entropy_and_candidate_gradient(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    matmul: str = "float32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``scored_cross_entropy`` (no mask) and dL/dC [N, D] (float32, not differentiable; the loss's gradient with
    respect to the candidates, whether or not ``candidates`` requires grad)."""
    dtype = _matmul_dtype(matmul, queries.device)
    with torch.autocast(device_type=queries.device.type, enabled=False):
        return _ScoredCrossEntropyAndCandidateGradient.apply(
            queries.float(), candidates.float(), _float32(bias), labels, _float32(weights), dtype,
        )


def inject(loss: torch.Tensor, values: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """``loss`` unchanged, whose backward also sends ``gradient`` (times the incoming gradient) into ``values`` (same
    shape): the rows of the truncated full-corpus backward, re-embedded with a graph, get the gradient the loss
    computed for their values in a table without one."""
    if values.shape != gradient.shape:
        raise ValueError(f"inject: values {tuple(values.shape)} and gradient {tuple(gradient.shape)} differ in shape")
    return _Inject.apply(loss, values, gradient.detach().to(values.dtype))


__all__ = ["fast_bfloat16", "inject", "scored_cross_entropy", "scored_cross_entropy_and_candidate_gradient"]
