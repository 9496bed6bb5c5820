"""The exact top-K with a bfloat16 screen equals a full float64 sort, whatever the vectors, chunks and histories."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tower_platform.monitor.alignment import QuerySet
from tower_platform.monitor.exact_top_k import _cut_keys, _order_keys, top_k_items


def _reference(queries: QuerySet, items: np.ndarray, k: int) -> np.ndarray:
    """(Q, k') float64 scores of each query's best k' items, excluded history at -inf."""
    scores = queries.vectors.astype(np.float64) @ items.astype(np.float64).T
    rows = np.repeat(np.arange(len(queries)), np.diff(queries.history_indptr))
    scores[rows, queries.history_indices] = -np.inf
    return -np.sort(-scores, axis=1)[:, : min(k, items.shape[0])]


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n, q, d = draw(st.integers(1, 400)), draw(st.integers(1, 40)), draw(st.integers(1, 12))
    style = draw(st.sampled_from(["normal", "unit", "ties", "negative", "scaled"]))
    items = rng.standard_normal((n, d))
    if style == "unit":
        items /= np.linalg.norm(items, axis=1, keepdims=True)
    elif style == "ties":  # few distinct vectors: many exact ties, and a collapsed block
        items = rng.standard_normal((3, d))[rng.integers(0, 3, size=n)]
    elif style == "negative":  # every score negative: the cut is negative too
        items = -np.abs(items)
    elif style == "scaled":
        items *= 10.0 ** rng.uniform(-3, 3, size=(n, 1))
    queries = np.abs(rng.standard_normal((q, d))) if style == "negative" else rng.standard_normal((q, d))
    lengths = rng.integers(0, min(n, 6) + 1, size=q)
    history = np.concatenate([rng.choice(n, size=h, replace=False) for h in lengths]) if lengths.sum() else \
        np.zeros(0, dtype=np.int64)
    query_set = QuerySet(queries.astype(np.float32), np.zeros(q, dtype=np.int64),
                         np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), history.astype(np.int64))
    return (query_set, items.astype(np.float32), draw(st.integers(1, 30)), draw(st.sampled_from([1, 3, 16, 64])),
            draw(st.sampled_from([64, 128, 192])), draw(st.sampled_from(["bfloat16", "float32"])))


@settings(max_examples=150, deadline=None)
@given(problems())
def test_the_top_k_scores_are_those_of_a_full_sort(problem):
    queries, items, k, query_chunk, item_chunk, screen = problem
    top = top_k_items(queries, items, k=k, query_chunk=query_chunk, item_chunk=item_chunk, screen=screen)
    expected = _reference(queries, items, k)
    assert top.shape == expected.shape
    exact = queries.vectors.astype(np.float64) @ items.astype(np.float64).T
    found = np.where(top >= 0, np.take_along_axis(exact, np.maximum(top, 0), axis=1), -np.inf)
    scale = np.linalg.norm(queries.vectors, axis=1, keepdims=True) * np.linalg.norm(items, axis=1).max()
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(found), finite)  # -1 exactly where fewer candidates than K remain
    tolerance = np.broadcast_to(1e-5 * scale + 1e-30, expected.shape)  # float32 rescoring vs float64
    assert np.all(np.abs(found[finite] - expected[finite]) <= tolerance[finite])
    rows = np.repeat(np.arange(len(queries)), np.diff(queries.history_indptr))
    assert not np.any(top[rows] == queries.history_indices[:, None])  # history never ranked
    ranked = top[top >= 0]
    assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in top) and ranked.max(initial=0) < items.shape[0]


def test_against_a_float32_full_sort_with_ties_broken_the_same_way():
    rng = np.random.default_rng(3)
    items = rng.normal(size=(5000, 16)).astype(np.float32)
    queries = QuerySet.without_history(rng.normal(size=(300, 16)).astype(np.float32), np.zeros(300))
    top = top_k_items(queries, items, k=50, query_chunk=128, item_chunk=1024, screen="bfloat16")
    reference = np.argsort(-(queries.vectors @ items.T), axis=1, kind="stable")[:, :50]
    np.testing.assert_array_equal(top, reference)


def test_order_keys_sort_like_the_values_and_cuts_round_down():
    values = torch.tensor([-torch.inf, -3.5, -1e-3, -0.0, 0.0, 1e-30, 0.2, 7.0, torch.inf])
    for dtype in (torch.bfloat16, torch.float32):
        keys = _order_keys(values.to(dtype).contiguous())
        assert torch.all(keys[1:] >= keys[:-1])
        cut = torch.tensor([0.123456789, -0.987654321], dtype=torch.float64)
        cut_keys = _cut_keys(cut, dtype, positive_cut=False)
        for c, key in zip(cut.tolist(), cut_keys.tolist(), strict=True):
            # every value at or above the cut has a key at or above the cut's key
            above = torch.tensor([c, c + 1e-3, c + 1.0], dtype=torch.float64).to(dtype)
            assert bool(torch.all(_order_keys(above.contiguous()) >= key))


@pytest.mark.parametrize("screen", ["bfloat16", "float32"])
def test_fewer_items_than_k_and_everything_excluded(screen):
    items = np.eye(3, dtype=np.float32)
    queries = QuerySet(np.ones((2, 3), dtype=np.float32), np.zeros(2, dtype=np.int64), np.array([0, 3, 3]),
                       np.array([0, 1, 2]))
    top = top_k_items(queries, items, k=5, screen=screen)
    assert top.shape == (2, 3) and (top[0] == -1).all() and sorted(top[1].tolist()) == [0, 1, 2]
