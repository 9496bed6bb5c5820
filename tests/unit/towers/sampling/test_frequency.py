"""The streaming frequency estimator on synthetic streams with known probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

from towers.errors import TowersConfigError
from towers.sampling.frequency import StreamingFrequencyEstimator

CLASSES = np.array([0.5, 0.2, 0.1, 0.05])  # per-step occurrence probabilities
PER_CLASS = 25


def _stream(steps: int, probabilities: np.ndarray, *, seed: int) -> np.ndarray:
    """occurs [steps, items]: item j occurs at a step with probability p_j."""
    return np.random.default_rng(seed).random((steps, len(probabilities))) < probabilities[None, :]


def _run(estimator: StreamingFrequencyEstimator, occurs: np.ndarray) -> np.ndarray:
    ids = torch.arange(occurs.shape[1])
    for row in torch.from_numpy(occurs):
        estimator.update(ids[row])
    return estimator.probability(ids).numpy()


def test_recovers_known_probabilities_within_ten_percent() -> None:
    p_true = np.repeat(CLASSES, PER_CLASS)
    estimate = _run(StreamingFrequencyEstimator(buckets=4096, hashes=1, alpha=0.01), _stream(3000, p_true, seed=1))
    for c, p in enumerate(CLASSES):
        mean = estimate[c * PER_CLASS : (c + 1) * PER_CLASS].mean()
        assert abs(mean - p) / p < 0.10, (p, mean)
    assert (np.abs(estimate - p_true) / p_true).max() < 0.5  # single items: a moving average over ~100 sightings


def test_multi_hash_beats_a_single_array_under_collisions() -> None:
    rng = np.random.default_rng(2)
    p_true = rng.choice([0.3, 0.1, 0.03, 0.01], size=150)
    occurs = _stream(2000, p_true, seed=3)
    single = _run(StreamingFrequencyEstimator(buckets=32, hashes=1, alpha=0.02, seed=0), occurs)
    multi = _run(StreamingFrequencyEstimator(buckets=32, hashes=4, alpha=0.02, seed=0), occurs)
    error_single = np.mean(np.abs(single - p_true) / p_true)
    error_multi = np.mean(np.abs(multi - p_true) / p_true)
    assert error_single > 0.5  # 150 items in 32 buckets: collisions inflate the estimates
    assert error_multi < 0.7 * error_single


def test_presence_update_counts_duplicates_within_a_step_once() -> None:
    a = StreamingFrequencyEstimator(buckets=64, hashes=2, update="presence")
    b = StreamingFrequencyEstimator(buckets=64, hashes=2, update="presence")
    for _ in range(10):
        a.update(torch.tensor([1, 2]))
        b.update(torch.tensor([1, 1, 1, 2]))
    assert torch.equal(a.interval, b.interval)
    assert a.probability(torch.tensor([1])).item() == 1.0  # seen at every step: P(appears in a batch) = 1


def test_occurrence_update_estimates_expected_copies_per_batch_uncapped() -> None:
    # item 1 occurs 3 times in every batch, item 2 once in every other batch, item 3 twice in every fourth batch:
    # expected occurrences per batch 3, 0.5 and 0.5. The old (presence) form says 1, 0.5 and 0.25.
    estimator = StreamingFrequencyEstimator(buckets=4096, hashes=2, alpha=0.05)
    for step in range(400):
        ids = [1, 1, 1] + ([2] if step % 2 == 0 else []) + ([3, 3] if step % 4 == 0 else [])
        estimator.update(torch.tensor(ids))
    p = estimator.probability(torch.tensor([1, 2, 3]))
    assert p[0].item() == pytest.approx(3.0, rel=0.02)  # > 1: not capped
    assert p[1].item() == pytest.approx(0.5, rel=0.05)
    assert p[2].item() == pytest.approx(0.5, rel=0.05)
    assert estimator.log_probability(torch.tensor([1])).item() == pytest.approx(math.log(3.0), abs=0.02)


def _sequential_reference(stream: list[list[int]], *, buckets: int, hashes: int, alpha: float, seed: int) -> np.ndarray:
    """Algorithm 1 of Yi et al. applied per occurrence, one id at a time: the c occurrences of a bucket in step t are
    taken as c arrivals spread evenly over the step (gaps (t - A) / c), and a bucket's first sighting takes its
    interval (t - 0) / c directly (no start-up bias)."""
    probe = StreamingFrequencyEstimator(buckets=buckets, hashes=hashes, alpha=alpha, seed=seed)
    last = np.zeros((hashes, buckets))
    interval = np.zeros((hashes, buckets))
    for t, ids in enumerate(stream, start=1):
        h = probe.bucket(torch.tensor(ids, dtype=torch.int64)).numpy()  # [m, N]
        for k in range(hashes):
            count: dict[int, int] = {}
            for b in h[k]:
                count[int(b)] = count.get(int(b), 0) + 1
            for b, c in count.items():
                gap = (t - last[k, b]) / c
                if last[k, b] == 0:
                    interval[k, b] = gap
                else:
                    for _ in range(c):  # one moving-average step per occurrence
                        interval[k, b] = (1 - alpha) * interval[k, b] + alpha * gap
                last[k, b] = t
    return interval


def test_occurrence_update_matches_the_per_occurrence_algorithm_run_id_by_id() -> None:
    rng = np.random.default_rng(7)
    stream = [list(rng.choice(40, size=int(rng.integers(1, 30)), p=np.r_[[0.3], np.full(39, 0.7 / 39)]))
              for _ in range(60)]
    estimator = StreamingFrequencyEstimator(buckets=16, hashes=3, alpha=0.1, seed=3)  # collisions on purpose
    for ids in stream:
        estimator.update(torch.tensor(ids, dtype=torch.int64))
    expected = _sequential_reference(stream, buckets=16, hashes=3, alpha=0.1, seed=3)
    assert np.allclose(estimator.interval.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_update_mode_travels_with_the_state(tmp_path) -> None:
    estimator = StreamingFrequencyEstimator(buckets=8, hashes=1, update="presence")
    estimator.update(torch.tensor([1, 1]))
    restored = StreamingFrequencyEstimator.from_arrays(dict(np.load(estimator.save_npz(tmp_path / "e.npz"))))
    assert restored.update_mode == "presence"
    with pytest.raises(TowersConfigError, match="update must be 'occurrence' or 'presence'"):
        StreamingFrequencyEstimator(update="unique")


def test_state_lives_in_buffers_and_round_trips(tmp_path) -> None:
    estimator = StreamingFrequencyEstimator(buckets=128, hashes=3, alpha=0.05, seed=4)
    occurs = _stream(200, np.array([0.5, 0.1, 0.2]), seed=5)
    probabilities = _run(estimator, occurs)
    state = estimator.state_dict()
    assert {"interval", "last_seen", "step", "hash_a", "hash_b"} <= set(state)
    restored = StreamingFrequencyEstimator(buckets=128, hashes=3, alpha=0.05, seed=99)
    restored.load_state_dict(state)
    assert np.array_equal(restored.probability(torch.arange(3)).numpy(), probabilities)
    path = estimator.save_npz(tmp_path / "estimator.npz")
    from_file = StreamingFrequencyEstimator.from_arrays(dict(np.load(path)))
    assert np.array_equal(from_file.probability(torch.arange(3)).numpy(), probabilities)
    assert int(from_file.step) == 200
