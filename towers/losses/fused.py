"""The softmax cross-entropy over a matrix of scores in one autograd node: few passes over the [B, N] matrix.

With thousands of candidates per step (mixed negatives, the full corpus) the [B, N] logit matrix is the largest
tensor of a training step, and on a CPU its passes through memory cost more than the matmul that makes it: composed
from stock ops (matmul, accidental-hit mask, excluded mask, log_softmax, nll, then their backwards) a step allocated
six [B, N] tensors and made a dozen passes over them; at B = 1024, N = 5120 that was three quarters of the step
(``ops/bench/train_profile.py``). ``scored_cross_entropy`` computes the same loss and gradients with one [B, N]
tensor and about nine passes:

    forward   S = Q C^T + b (one addmm), S[mask] = -inf (in place), m_i = max_j S_ij, P = exp(max(S - m, -80)) / Z
              (in place: S becomes the softmax P, masked entries exactly 0, kept for the backward),
              L = (1/B) sum_i r_i (m_i + log Z_i - S_i,y_i)
    backward  dS = (r_i g / B) (P - onehot(y)) (in place in P), dQ = dS C, dC = dS^T Q, db = sum_i dS_i

Masked scores are exactly -inf, so their softmax is exactly 0 and they get no gradient, as with ``masked_fill``. A
row whose positive is masked has an infinite loss, as ``F.cross_entropy`` would give it. Everything runs in float32
with autocast off (``full_precision``), so the loss is the one ``weighted_cross_entropy`` gives within float rounding.
The saved P is reused only once: a second backward through the same graph (``retain_graph``) is refused.
"""

from __future__ import annotations

from typing import Any

import torch

_FLOOR = -80.0  # the lowest S - m kept (see forward)


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
    ) -> torch.Tensor:
        scores = queries @ candidates.transpose(0, 1) if bias is None else torch.addmm(
            bias, queries, candidates.transpose(0, 1))  # [B, N]
        if mask is not None:
            scores.masked_fill_(mask, float("-inf"))
        positive = scores.gather(1, labels.unsqueeze(1)).squeeze(1)  # [B]
        top = scores.amax(dim=1, keepdim=True)  # [B, 1]
        # exp of S - m below -80 would be a subnormal float, which the CPU multiplies ~20x slower: floor it at
        # exp(-80) ~ 1.8e-35 (a change below float32's resolution of the row sum), then put the masked zeros back
        probabilities = scores.sub_(top).clamp_(min=_FLOOR).exp_()  # [B, N] unnormalised, in place
        if mask is not None:
            probabilities.masked_fill_(mask, 0.0)
        total = probabilities.sum(dim=1, keepdim=True)  # [B, 1]
        probabilities.div_(total)  # the softmax
        per_example = (top + total.log()).squeeze(1) - positive  # [B] logsumexp - positive score
        rows = per_example.shape[0]
        loss = (per_example if weights is None else per_example * weights).sum() / rows
        ctx.save_for_backward(queries, candidates, probabilities, labels, weights, per_example)
        ctx.has_bias = bias is not None
        ctx.used = False
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        if ctx.used:
            raise RuntimeError("scored_cross_entropy: the saved softmax was used by an earlier backward (retain_graph "
                               "is not supported); recompute the loss for a second backward.")
        ctx.used = True
        queries, candidates, probabilities, labels, weights, per_example = ctx.saved_tensors
        rows = probabilities.shape[0]
        scale = (grad / rows).expand(rows) if weights is None else (grad / rows) * weights  # [B]
        d_scores = probabilities.mul_(scale.unsqueeze(1))  # [B, N], in place: the softmax is used once
        index = torch.arange(rows, device=labels.device)
        d_scores[index, labels] -= scale
        d_queries = d_scores @ candidates if ctx.needs_input_grad[0] else None  # [B, D]
        d_candidates = d_scores.transpose(0, 1) @ queries if ctx.needs_input_grad[1] else None  # [N, D]
        d_bias = d_scores.sum(dim=0) if ctx.has_bias and ctx.needs_input_grad[2] else None  # [N]
        d_weights = per_example * (grad / rows) if weights is not None and ctx.needs_input_grad[4] else None
        return d_queries, d_candidates, d_bias, None, d_weights, None


def scored_cross_entropy(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(1/B) sum_i r_i CE(softmax_j(<q_i, c_j> + b_j, -inf where mask), y_i): queries [B, D], candidates [N, D],
    labels [B] (each row's positive column), bias [N], weights [B] (r_i), mask bool [B, N] -> scalar, float32."""
    with torch.autocast(device_type=queries.device.type, enabled=False):
        return _ScoredCrossEntropy.apply(
            queries.float(), candidates.float(), None if bias is None else bias.float(), labels,
            None if weights is None else weights.float(), mask,
        )


__all__ = ["scored_cross_entropy"]
