"""The streaming frequency estimator on synthetic streams with known probabilities."""

from __future__ import annotations

import numpy as np
import torch


from synthetic_interactions import single_threaded_torch  # noqa: F401  (autouse fixture)

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


def test_duplicates_within_a_step_count_once() -> None:
    a = StreamingFrequencyEstimator(buckets=64, hashes=2)
    b = StreamingFrequencyEstimator(buckets=64, hashes=2)
    for _ in range(10):
        a.update(torch.tensor([1, 2]))
        b.update(torch.tensor([1, 1, 1, 2]))
    assert torch.equal(a.interval, b.interval)
    assert a.probability(torch.tensor([1])).item() == 1.0  # seen at every step


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
