"""The MoCo-style queue of item embeddings: FIFO order, its sampling correction, never a row's own positive."""

from __future__ import annotations

import math

import pytest
import torch
from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.losses import in_batch_softmax_loss
from towers.sampling.queue import ItemEmbeddingQueue


def test_queue_is_first_in_first_out() -> None:
    queue = ItemEmbeddingQueue(4, 2)
    queue.enqueue(torch.ones(3, 2), torch.tensor([1, 2, 3]))
    assert queue.keys.tolist() == [1, 2, 3, -1]  # slot 3 still empty
    queue.enqueue(2 * torch.ones(2, 2), torch.tensor([4, 5]))
    assert queue.keys.tolist() == [5, 2, 3, 4]  # key 1, the oldest, was overwritten first
    assert torch.equal(queue.embeddings[0], torch.full((2,), 2.0))


def test_queue_never_returns_a_rows_positive_as_negative() -> None:
    queue = ItemEmbeddingQueue(6, 2)
    queue.enqueue(torch.randn(5, 2), torch.tensor([7, 8, 7, 9, 8]))
    positives = torch.tensor([7, 8, 10])
    allowed = queue.negative_mask(positives)  # [3, 6]
    for row, positive in enumerate(positives.tolist()):
        negatives = queue.keys[allowed[row]].tolist()
        assert positive not in negatives and -1 not in negatives  # neither its positive nor an empty slot
    assert allowed[2].sum() == 5  # item 10 is not queued: all five filled slots are its negatives


def test_queued_copies_of_the_positive_do_not_change_the_loss() -> None:
    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(3, 4, generator=generator), dim=1)  # [B, D]
    items = torch.nn.functional.normalize(torch.randn(3, 4, generator=generator), dim=1)  # [B, D]
    keys = torch.tensor([0, 1, 2])
    queue = ItemEmbeddingQueue(4, 4)
    queue.enqueue(items[:1].repeat(4, 1), keys[:1].repeat(4))  # the queue holds only copies of row 0's positive
    candidates = torch.cat([items, queue.embeddings])  # [B + Q, D]
    excluded = ~torch.cat([torch.ones(3, 3, dtype=torch.bool), queue.negative_mask(keys)], dim=1)  # [B, B + Q]
    weights = torch.tensor([1.0, 0.0, 0.0])  # only row 0 counts
    with_queue = in_batch_softmax_loss(queries, candidates, temperature=0.1, weights=weights, excluded=excluded)
    without = in_batch_softmax_loss(queries, items, temperature=0.1, weights=weights)
    assert with_queue.item() == pytest.approx(without.item(), rel=1e-6)
    # rows 1 and 2 do see the queued copies as negatives, so their loss grows
    others = torch.tensor([0.0, 1.0, 1.0])
    assert in_batch_softmax_loss(queries, candidates, temperature=0.1, weights=others, excluded=excluded) > \
        in_batch_softmax_loss(queries, items, temperature=0.1, weights=others)


def test_queue_sampling_correction_is_the_log_of_the_expected_copies_uncapped() -> None:
    queue = ItemEmbeddingQueue(512, 2)
    log_p = torch.log(torch.tensor([0.001, 0.5, 3.0]))  # expected occurrences per batch of each item
    # expected copies in the queue: p * Q / B with Q / B = 512 / 128 = 4: 0.004, 2 and 12 (a popular item's copies
    # are each corrected by log 2 and log 12, not by min(1, .) = 0)
    expected = torch.tensor([math.log(0.004), math.log(2.0), math.log(12.0)])
    assert torch.allclose(queue.log_q(log_p, batch_size=128), expected, atol=1e-6)


def test_model_fills_the_queue_only_while_training() -> None:
    from synthetic_interactions import trainable_towers

    from towers.config import TowerConfig

    config = TowerConfig().with_overrides({"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "queue_size": 16})
    model, batch = trainable_towers(config)
    queue = model.task.queue
    assert queue is not None and (queue.keys == -1).all()
    model.loss(batch)
    assert (queue.keys >= 0).all()
    model.eval()
    before = queue.keys.clone()
    model.loss(batch)
    assert torch.equal(before, queue.keys)
