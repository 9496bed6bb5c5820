"""The bounded relative alignment distance: its [0, 1] scale (Hypothesis and constructed extremes), its sampling
noise, and the covariance it is computed from."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tower_platform.monitor.covariance import covariance_of, relative_alignment, segment_spread

FINITE = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def covariances(draw) -> tuple[np.ndarray, np.ndarray]:
    """Two positive semi-definite matrices M M^T of one dimension, any rank (including 0)."""
    d = draw(st.integers(1, 6))
    factors = [draw(arrays(np.float64, (d, draw(st.integers(0, d + 1))), elements=FINITE)) for _ in range(2)]
    return tuple(m @ m.T for m in factors)


@settings(max_examples=300, deadline=None)
@given(covariances())
def test_the_distance_of_two_covariances_lies_in_zero_one(pair):
    a, b = pair
    d = relative_alignment(a, b)
    assert 0.0 <= d <= 1.0
    assert relative_alignment(b, a) == pytest.approx(d, abs=1e-12)  # symmetric
    assert relative_alignment(a, a) == pytest.approx(0.0, abs=1e-12)


def test_constructed_extremes():
    a = np.diag([3.0, 1.0, 0.0])
    assert relative_alignment(a, a) == 0.0  # same spread
    assert relative_alignment(a, np.zeros((3, 3))) == 1.0  # collapsed to one point: exactly 1
    assert relative_alignment(np.diag([1.0, 0.0]), np.diag([0.0, 1.0])) == 1.0  # orthogonal subspaces
    assert relative_alignment(np.zeros((2, 2)), np.zeros((2, 2))) == 0.0  # both collapsed: identical
    # same shape, r times the spread: (1 - r)^2 / (1 + r^2) -> 1/5 for r = 2, 81/101 for r = 10
    assert relative_alignment(a, 2 * a) == pytest.approx(1 / 5)
    assert relative_alignment(a, 10 * a) == pytest.approx(81 / 101)
    # the unbounded figure it replaces: ||A - 10 A||^2 / ||A||^2 = 81
    assert np.sum((a - 10 * a) ** 2) / np.sum(a * a) == pytest.approx(81)


def test_sampling_noise_of_an_aligned_segment_matches_k_over_n():
    # n vectors of an isotropic spread over k = 64 dimensions against the exact covariance: d ~ (k/n) / (2 + k/n)
    rng = np.random.default_rng(0)
    k = 64
    for n, expected in ((20, 3.2 / 5.2), (50, 1.28 / 3.28), (400, 0.16 / 2.16)):
        found = [relative_alignment(np.eye(k), covariance_of(rng.standard_normal((n, k)), np.arange(n))[1])
                 for _ in range(5)]
        assert np.mean(found) == pytest.approx(expected, abs=0.05)


def test_a_collapsed_segment_has_exactly_zero_covariance_and_distance_one():
    rng = np.random.default_rng(1)
    vectors = np.vstack([rng.standard_normal((30, 4)), np.tile([0.3, -0.2, 0.9, 0.1], (12, 1))]).astype(np.float32)
    codes = np.array([0] * 30 + [1] * 12)
    mean, covariance = covariance_of(vectors, np.flatnonzero(codes == 1))
    assert np.all(covariance == 0.0) and mean == pytest.approx([0.3, -0.2, 0.9, 0.1])
    reference = covariance_of(vectors, np.flatnonzero(codes == 0))[1]
    spread = segment_spread(vectors, codes, n_segments=2, reference=reference)
    assert spread.relative_alignment.tolist() == [0.0, 1.0]
    assert spread.alignment_distance[1] == pytest.approx(np.sum(reference**2))
    # in chunks of 7 rows: the same covariance as in one pass
    chunked = covariance_of(vectors, np.arange(42), row_chunk=7)[1]
    np.testing.assert_allclose(chunked, np.cov(vectors.T.astype(np.float64), bias=True), atol=1e-6)
