"""The spread of item segments: mean and covariance of each segment's vectors, and their distance to a reference.

Two distances between the covariance C(S) of a segment and the covariance C(S_major) of the major category:

- ``alignment_distance`` = ||C(S_major) - C(S)||_F^2, the Category Alignment Loss term itself (unbounded; its scale
  is that of the squared vector spread);
- ``relative_alignment`` = ||A - B||_F^2 / (||A||_F^2 + ||B||_F^2) with A = C(S_major), B = C(S): bounded, in [0, 1].

Why [0, 1]. Covariances are symmetric positive semi-definite, and for two such matrices the Frobenius inner product
<A, B> = tr(AB) = ||A^1/2 B^1/2||_F^2 is never negative. Hence ||A - B||^2 = ||A||^2 + ||B||^2 - 2 <A, B> lies
between 0 and ||A||^2 + ||B||^2:

- 0 exactly when B = A (the segment spreads like the major category);
- 1 exactly when <A, B> = 0: the two spread in orthogonal subspaces, in particular when the segment collapsed to one
  point (B = 0, every vector the same). Both zero (both collapsed) counts as identical: 0.
- With r = ||B|| / ||A|| and cos = <A, B> / (||A|| ||B||) in [0, 1], d = (1 + r^2 - 2 r cos) / (1 + r^2), at least
  (1 - r)^2 / (1 + r^2): a segment with the same shape but twice (or half) the spread scores 0.2, ten times 0.80.
  (For arbitrary symmetric matrices the ratio could reach 2, at B = -A; covariances cannot.)

Sampling noise. n vectors drawn from an isotropic spread over k dimensions give a sample covariance whose expected
||B||^2 is ||A||^2 (1 + k / n) with <A, B> ~ ||A||^2, so a perfectly aligned segment scores d ~ (k/n) / (2 + k/n):
0.62 for k = 64 and n = 20 items, 0.39 for n = 50, 0.07 for n = 400. This is why segments with few items are judged
pooled rather than on their own (:mod:`tower_platform.monitor.thresholds`).

Memory: one (D, D) covariance at a time; the (S, D) means and (S,) distances are all that is kept per segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROW_CHUNK = 65_536


def relative_alignment(reference: np.ndarray, covariance: np.ndarray) -> float:
    """||A - B||_F^2 / (||A||_F^2 + ||B||_F^2) in [0, 1] for covariances A (reference) and B (see the docstring)."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(covariance, dtype=np.float64)
    scale = float(np.einsum("ij,ij->", a, a) + np.einsum("ij,ij->", b, b))
    if scale == 0.0:
        return 0.0
    diff = a - b
    return min(1.0, float(np.einsum("ij,ij->", diff, diff)) / scale)  # min: rounding above 1 when <A, B> ~ 0


def covariance_of(vectors: np.ndarray, rows: np.ndarray, *, row_chunk: int = ROW_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and population covariance (D, D), float64, of ``vectors[rows]`` (zeros when ``rows`` is empty).

    Accumulated ``row_chunk`` rows at a time and shifted by the first vector, so that a segment of identical vectors
    gets exactly zero covariance: C = (sum (x - s)(x - s)^T - n (m - s)(m - s)^T) / n.
    """
    d = vectors.shape[1]
    if rows.size == 0:
        return np.zeros(d), np.zeros((d, d))
    shift = vectors[rows[0]].astype(np.float32)  # (D,)
    total = np.zeros(d, dtype=np.float64)  # (D,) sum of x - shift
    outer = np.zeros((d, d), dtype=np.float64)  # (D, D) sum of (x - shift)(x - shift)^T
    for begin in range(0, rows.size, row_chunk):
        x = vectors[rows[begin : begin + row_chunk]].astype(np.float32) - shift  # (c, D)
        total += x.sum(axis=0, dtype=np.float64)
        outer += (x.T @ x).astype(np.float64)  # float32 product per chunk, float64 sums across chunks
    centred_mean = total / rows.size  # (D,)
    return shift + centred_mean, outer / rows.size - np.outer(centred_mean, centred_mean)


@dataclass(frozen=True, eq=False)
class SegmentSpread:
    means: np.ndarray  # (S, D)
    alignment_distance: np.ndarray  # (S,) ||C(ref) - C(s)||_F^2
    relative_alignment: np.ndarray  # (S,) in [0, 1]


def segment_spread(vectors: np.ndarray, codes: np.ndarray, *, n_segments: int, reference: np.ndarray,
                   segments: np.ndarray | None = None) -> SegmentSpread:
    """Mean and distances to ``reference`` (a covariance) of each segment; ``segments`` limits which are computed
    (the others stay zero). One covariance in memory at a time; each iteration touches its own rows only."""
    d = vectors.shape[1]
    means = np.zeros((n_segments, d), dtype=np.float64)
    distance = np.zeros(n_segments, dtype=np.float64)
    relative = np.zeros(n_segments, dtype=np.float64)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_segments + 1))
    for s in range(n_segments) if segments is None else segments:
        rows = order[bounds[s] : bounds[s + 1]]
        if rows.size == 0:
            continue
        means[s], covariance = covariance_of(vectors, rows)
        diff = covariance - reference
        distance[s] = float(np.einsum("ij,ij->", diff, diff))
        relative[s] = relative_alignment(reference, covariance)
    return SegmentSpread(means, distance, relative)
