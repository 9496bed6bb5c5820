"""Loss functions against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch


from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.losses import (
    correct_sampling_bias,
    in_batch_softmax_loss,
    mixed_negative_log_q,
    remove_accidental_hits,
    similarity_logits,
    weighted_softmax_cross_entropy,
)

# Two queries, two candidates, tau = 1: logits = [[1, 0], [0, 1]].
Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
V = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def test_plain_in_batch_softmax_by_hand() -> None:
    # row i: CE = log(e^1 + e^0) - 1 = log(1 + e^-1) = 0.3132617; both rows the same.
    loss = in_batch_softmax_loss(Q, V, temperature=1.0)
    assert loss.item() == pytest.approx(0.3132617, abs=1e-6)


def test_temperature_scales_logits() -> None:
    # tau = 0.5 doubles the logits: CE = log(1 + e^-2) = 0.1269280
    loss = in_batch_softmax_loss(Q, V, temperature=0.5)
    assert loss.item() == pytest.approx(0.1269280, abs=1e-6)


def test_sampling_bias_correction_by_hand() -> None:
    # p = [0.5, 0.25]: corrected logits = logits - log p
    #   row 0: [1 + ln 2, 0 + ln 4] -> CE0 = log(1 + e^{ln4 - 1 - ln2}) = 0.5514447
    #   row 1: [0 + ln 2, 1 + ln 4] -> CE1 = log(1 + e^{ln2 - 1 - ln4}) = 0.1688476
    #   mean = 0.3601462
    log_q = torch.log(torch.tensor([0.5, 0.25]))
    loss = in_batch_softmax_loss(Q, V, temperature=1.0, log_q=log_q)
    assert loss.item() == pytest.approx(0.3601462, abs=1e-6)


def test_reward_weights_by_hand() -> None:
    # r = [2, 0]: L = (2 * CE0 + 0 * CE1) / 2 = CE0 = 0.5514447 (CE0 from the corrected case above)
    log_q = torch.log(torch.tensor([0.5, 0.25]))
    loss = in_batch_softmax_loss(Q, V, temperature=1.0, log_q=log_q, weights=torch.tensor([2.0, 0.0]))
    assert loss.item() == pytest.approx(0.5514447, abs=1e-6)


def test_correction_lowers_a_frequent_negatives_share() -> None:
    # one query, positive at column 0, a frequent negative (p = 0.5) and a rare one (p = 0.01) with equal raw logits
    logits = torch.tensor([[2.0, 1.0, 1.0]])
    log_q = torch.log(torch.tensor([0.1, 0.5, 0.01]))
    before = torch.softmax(logits, dim=1)[0]
    after = torch.softmax(correct_sampling_bias(logits, log_q), dim=1)[0]
    assert after[1] < before[1]  # the frequent negative loses probability mass
    assert after[1] < after[2]  # and now ranks below the rare one
    assert (after[1] - after[2]).item() < 0


def test_accidental_hit_is_excluded_but_not_the_diagonal() -> None:
    # rows 0 and 1 share item 7: column 1 is an accidental hit for row 0 and column 0 for row 1.
    logits = torch.tensor([[3.0, 2.0, 1.0], [2.0, 3.0, 1.0], [1.0, 1.0, 3.0]])
    ids = torch.tensor([7, 7, 3])
    masked = remove_accidental_hits(logits, ids, ids)
    assert masked[0, 1] == float("-inf") and masked[1, 0] == float("-inf")
    assert torch.equal(masked.diagonal(), logits.diagonal())
    assert torch.isfinite(masked[2]).all()
    # row 0 by hand without column 1: CE = log(e^3 + e^1) - 3 = log(1 + e^-2) = 0.1269280
    per_row = weighted_softmax_cross_entropy(masked[:1])
    assert per_row.item() == pytest.approx(0.1269280, abs=1e-6)


def test_accidental_hits_among_uniform_negatives() -> None:
    logits = torch.zeros(2, 4)  # 2 in-batch + 2 uniform candidates
    masked = remove_accidental_hits(logits, torch.tensor([5, 6]), torch.tensor([5, 6, 6, 9]))
    assert masked[1, 2] == float("-inf")
    assert torch.isfinite(masked[0]).all() and torch.isfinite(masked[1, [0, 1, 3]]).all()


def test_mixed_negative_log_q() -> None:
    # in-batch: the estimates; uniform: log(B'/|corpus|) = log(2/100)
    in_batch = torch.log(torch.tensor([0.5, 0.2]))
    log_q = mixed_negative_log_q(in_batch, num_uniform=2, corpus_size=100)
    expected = torch.tensor([math.log(0.5), math.log(0.2), math.log(0.02), math.log(0.02)])
    assert torch.allclose(log_q, expected)
    assert torch.equal(mixed_negative_log_q(in_batch, num_uniform=0, corpus_size=100), in_batch)


def test_similarity_logits_shape_and_values() -> None:
    q = torch.tensor([[1.0, 2.0]])
    c = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, -1.0]])
    # <q, c_j> / 0.5 = [11, 1, -2] * 2
    assert similarity_logits(q, c, temperature=0.5).tolist() == [[22.0, 2.0, -4.0]]


def test_uniform_log_q_is_the_log_of_the_expected_draws_of_an_item_uncapped() -> None:
    from towers.losses.softmax import uniform_log_q

    # 8 draws from 32 items: each item is expected 8 / 32 = 0.25 times; 64 draws: 2 times (log 2, not log 1)
    assert torch.allclose(uniform_log_q(8, 32), torch.full((8,), math.log(0.25)))
    assert torch.allclose(uniform_log_q(64, 32), torch.full((64,), math.log(2.0)))


def test_losses_compute_in_float32_under_bf16_autocast() -> None:
    # under autocast a matmul of float32 inputs runs in bf16 whatever .float() said; the losses must switch it off.
    # bf16 keeps 8 bits of mantissa: logits of ~20 would be off by ~0.06, far above the 1e-5 allowed here.
    from towers.losses.softmax import sampled_binary_cross_entropy

    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(64, 32, generator=generator), dim=1)
    items = torch.nn.functional.normalize(torch.randn(64, 32, generator=generator), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = similarity_logits(queries, items, temperature=0.05)
        loss = in_batch_softmax_loss(queries, items, temperature=0.05)
        bce = sampled_binary_cross_entropy(queries, items, items[:8], temperature=0.05)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, queries @ items.T / 0.05, atol=1e-5)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(in_batch_softmax_loss(queries, items, temperature=0.05).item(), abs=1e-5)
    assert bce.item() == pytest.approx(
        sampled_binary_cross_entropy(queries, items, items[:8], temperature=0.05).item(), abs=1e-5)
