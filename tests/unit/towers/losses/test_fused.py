"""The fused softmax cross-entropy gives the composed loss's value and gradients (bias, masks, weights, hits)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from towers.losses import fused as fused_module
from towers.losses.fused import scored_cross_entropy
from towers.losses.softmax import in_batch_softmax_loss, remove_accidental_hits


def _reference(queries, candidates, labels, *, bias=None, weights=None, mask=None):
    logits = queries @ candidates.T + (0.0 if bias is None else bias)
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    per_example = F.cross_entropy(logits, labels, reduction="none")
    return (per_example if weights is None else per_example * weights).mean()


def _inputs(seed: int, rows: int, columns: int, dim: int = 6):
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(rows, dim, generator=generator, dtype=torch.float64, requires_grad=True)
    candidates = torch.randn(columns, dim, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(columns, generator=generator, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(rows, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, columns, (rows,), generator=generator)
    mask = torch.rand(rows, columns, generator=generator) < 0.3
    mask[torch.arange(rows), labels] = False  # never the positive
    return queries, candidates, bias, weights, labels, mask


def _fused64(queries, candidates, labels, *, bias=None, weights=None, mask=None):
    """The fused node in float64 (``scored_cross_entropy`` casts to float32), for tight comparisons."""
    return fused_module._ScoredCrossEntropy.apply(queries, candidates, bias, labels, weights, mask, torch.float32)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 7), extra=st.integers(0, 9),
       use_bias=st.booleans(), use_weights=st.booleans(), use_mask=st.booleans())
def test_value_and_every_gradient_match_the_composed_loss(seed, rows, extra, use_bias, use_weights, use_mask) -> None:
    queries, candidates, bias, weights, labels, mask = _inputs(seed, rows, rows + extra)
    options = {"bias": bias if use_bias else None, "weights": weights if use_weights else None,
               "mask": mask if use_mask else None}
    fused = _fused64(queries, candidates, labels, **options)
    reference = _reference(queries, candidates, labels, **options)
    assert torch.allclose(fused, reference, rtol=1e-12, atol=1e-12)
    wrt = [queries, candidates] + [t for t in (options["bias"], options["weights"]) if t is not None]
    for got, expected in zip(torch.autograd.grad(fused, wrt), torch.autograd.grad(reference, wrt), strict=True):
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_float32_entry_matches_the_composed_in_batch_loss_with_hits_and_exclusions() -> None:
    torch.manual_seed(0)
    queries, items = torch.randn(8, 4, requires_grad=True), torch.randn(20, 4, requires_grad=True)
    log_q = torch.randn(20)
    positive_ids = torch.tensor([1, 2, 3, 1, 5, 6, 7, 8])
    candidate_ids = torch.cat([positive_ids, torch.tensor([1, 2, 9, 9, 3, 4, 5, 6, 7, 0, 0, 1])])
    excluded = torch.zeros(8, 20, dtype=torch.bool)
    excluded[2, 15] = excluded[5, 9] = True
    fused = in_batch_softmax_loss(queries, items, temperature=0.1, log_q=log_q, positive_ids=positive_ids,
                                  candidate_ids=candidate_ids, weights=torch.linspace(0.5, 2.0, 8), excluded=excluded)
    logits = remove_accidental_hits(queries @ items.T / 0.1 - log_q, positive_ids, candidate_ids)
    logits = logits.masked_fill(excluded, float("-inf"))
    reference = (F.cross_entropy(logits, torch.arange(8), reduction="none") * torch.linspace(0.5, 2.0, 8)).mean()
    assert torch.allclose(fused, reference, atol=1e-5)
    got, expected = torch.autograd.grad(fused, [queries, items]), torch.autograd.grad(reference, [queries, items])
    assert all(torch.allclose(g, e, atol=1e-5) for g, e in zip(got, expected, strict=True))


def test_a_masked_positive_gives_an_infinite_loss_and_a_second_backward_the_same_gradients() -> None:
    queries, candidates = torch.randn(2, 3), torch.randn(4, 3, requires_grad=True)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0, 1] = True
    assert torch.isinf(scored_cross_entropy(queries, candidates, torch.tensor([1, 2]), mask=mask))
    loss = scored_cross_entropy(queries, candidates, torch.tensor([0, 2]), mask=mask)
    loss.backward(retain_graph=True)
    first = candidates.grad.clone()
    assert torch.isfinite(first).all()
    loss.backward()  # the gradients were computed in the forward: a second backward adds them again
    assert torch.allclose(candidates.grad, 2 * first)


@pytest.mark.parametrize("rows", [1, 17, 40, 100])
def test_blocks_of_rows_give_the_one_block_result(rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    queries, candidates, bias, weights, labels, mask = _inputs(7, 100, 30)
    options = {"bias": bias, "weights": weights, "mask": mask}
    whole = _fused64(queries, candidates, labels, **options)
    wrt = [queries, candidates, bias, weights]
    expected = torch.autograd.grad(whole, wrt)
    monkeypatch.setattr(fused_module, "_block_rows", lambda *_: rows)
    blocked = _fused64(queries, candidates, labels, **options)
    assert torch.allclose(blocked, whole, rtol=1e-12)
    for got, want in zip(torch.autograd.grad(blocked, wrt), expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_the_candidate_gradient_is_returned_and_inject_sends_it_into_re_embedded_rows() -> None:
    queries, candidates, bias, weights, labels, _ = _inputs(11, 9, 25)
    reference = _reference(queries.float(), candidates.float(), labels, bias=bias.float(), weights=weights.float())
    expected = torch.autograd.grad(reference, [queries, candidates])
    table = candidates.detach().float()  # a table without a graph
    loss, gradient = fused_module.scored_cross_entropy_and_candidate_gradient(
        queries, table, labels, bias=bias.detach(), weights=weights.detach())
    assert torch.allclose(loss, reference.float(), atol=1e-5)
    assert not gradient.requires_grad and torch.allclose(gradient.double(), expected[1], atol=1e-5)
    rows = torch.tensor([0, 3, 7])
    leaf = candidates.detach().float().requires_grad_()
    fresh = leaf[rows] * 1.0  # the rows re-embedded with a graph
    total = fused_module.inject(loss, fresh, gradient[rows])
    assert total.item() == pytest.approx(loss.item())
    (2.0 * total).backward()
    assert torch.allclose(queries.grad, 2.0 * expected[0], atol=1e-5)  # the loss's own gradient, untouched
    assert torch.allclose(leaf.grad[rows].double(), 2.0 * expected[1][rows], atol=1e-5)
    others = torch.ones(25, dtype=torch.bool)
    others[rows] = False
    assert (leaf.grad[others] == 0).all()  # rows not re-embedded get nothing
    with pytest.raises(ValueError, match="differ in shape"):
        fused_module.inject(loss, fresh, gradient[:2])


def test_scores_far_below_the_row_maximum_are_floored_without_changing_the_loss_or_gradients() -> None:
    queries, candidates, bias, weights, labels, mask = _inputs(3, 6, 40)
    spread = bias.detach() * 60.0  # scores from about -200 to +200: many exp(S - m) would be subnormal
    fused = _fused64(queries, candidates, labels, bias=spread, mask=mask)
    reference = _reference(queries, candidates, labels, bias=spread, mask=mask)
    assert torch.isfinite(fused) and torch.allclose(fused, reference, rtol=1e-9)
    got, expected = torch.autograd.grad(fused, [queries]), torch.autograd.grad(reference, [queries])
    assert torch.allclose(got[0], expected[0], rtol=1e-9, atol=1e-30)
    probabilities = torch.softmax((queries @ candidates.T + spread).masked_fill(mask, float("-inf")), dim=1)
    assert ((probabilities > 0) & (probabilities < 1e-35)).any()  # the case the floor is for does occur here


@pytest.mark.parametrize("block_elements", [None, 64])
def test_bfloat16_matmuls_stay_within_a_percent_of_float32(block_elements, monkeypatch: pytest.MonkeyPatch) -> None:
    if block_elements is not None:
        monkeypatch.setitem(fused_module._BLOCK_ELEMENTS, "cpu", block_elements)  # 16-row blocks
    generator = torch.Generator().manual_seed(3)
    queries = (F.normalize(torch.randn(48, 16, generator=generator), dim=1) / 0.05).requires_grad_()
    candidates = F.normalize(torch.randn(300, 16, generator=generator), dim=1).requires_grad_()
    bias = torch.randn(300, generator=generator).requires_grad_()
    weights = torch.rand(48, generator=generator)
    labels = torch.randint(0, 300, (48,), generator=generator)
    mask = torch.rand(48, 300, generator=generator) < 0.2
    mask[torch.arange(48), labels] = False
    results = {}
    for matmul in ("float32", "bfloat16"):
        loss = scored_cross_entropy(queries, candidates, labels, bias=bias, weights=weights, mask=mask, matmul=matmul)
        results[matmul] = (loss.detach(), *torch.autograd.grad(loss, [queries, candidates, bias]))
    for exact, low in zip(results["float32"], results["bfloat16"], strict=True):
        error = float((low - exact).norm() / exact.norm())
        assert error < 0.01, error  # measured 1e-4 (loss) to 3e-3 (gradients)
    assert not torch.equal(results["float32"][1], results["bfloat16"][1])  # the rounding did happen
    loss, candidate_gradient = fused_module.scored_cross_entropy_and_candidate_gradient(
        queries.detach(), candidates.detach(), labels, matmul="bfloat16")
    table = candidates.detach().requires_grad_()
    (expected,) = torch.autograd.grad(scored_cross_entropy(queries.detach(), table, labels), [table])
    assert float((candidate_gradient - expected.detach()).norm() / expected.norm()) < 0.01
    with pytest.raises(ValueError, match="matmul 'float16': expected one of 'auto', 'float32', 'bfloat16'"):
        scored_cross_entropy(queries, candidates, labels, matmul="float16")


def test_auto_matmul_is_bfloat16_exactly_where_the_hardware_multiplies_it(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(4)
    queries, candidates = torch.randn(8, 4, generator=generator), torch.randn(30, 4, generator=generator)
    labels = torch.randint(0, 30, (8,), generator=generator)
    values = {m: scored_cross_entropy(queries, candidates, labels, matmul=m) for m in ("float32", "bfloat16", "auto")}
    expected = "bfloat16" if fused_module.fast_bfloat16(torch.device("cpu")) else "float32"
    assert torch.equal(values["auto"], values[expected])
    for supported in (True, False):  # either answer of the hardware check picks its dtype
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda s=supported: s, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        assert fused_module.fast_bfloat16(torch.device("cpu")) is supported
        auto = scored_cross_entropy(queries, candidates, labels, matmul="auto")
        assert torch.equal(auto, values["bfloat16" if supported else "float32"])
