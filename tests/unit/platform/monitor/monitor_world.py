"""A small model with two indexed versions: v1 healthy, v2 with category C collapsed to one point.

Items: 100 unit vectors in 4-d, categories A (40), B (30), C (30). Queries: 24 users, each with a training
interaction and a test interaction; every query vector has a positive 4th component, and v2 puts all of C at
(0, 0, 0, -1), behind ~half of the other items for every query, so that C is never in a top-10 (coverage 0) and its
covariance is zero (relative alignment distance 1.0).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from tower_platform.monitor.inputs import MonitorInputs
from tower_platform.monitor.thresholds import MonitorThresholds
from tower_platform.naming import collection_name
from reference_tower import ReferenceFeature, build_reference_tower

DIMENSION = 4
N_USERS = 24
CATEGORY_SIZES = {"A": 40, "B": 30, "C": 30}
THRESHOLDS = MonitorThresholds(k=10, min_items=20, min_queries=5)


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class MonitorWorld:
    item_ids: list[str]
    categories: list[str]
    healthy: np.ndarray  # (100, 4)
    collapsed: np.ndarray  # (100, 4)
    user_vectors: np.ndarray  # (24, 4)
    inputs: MonitorInputs


def build_world() -> MonitorWorld:
    rng = np.random.default_rng(7)
    categories = [c for c, n in CATEGORY_SIZES.items() for _ in range(n)]
    item_ids = [f"m{i}" for i in range(len(categories))]
    healthy = _unit(rng.normal(size=(len(item_ids), DIMENSION)))
    collapsed = healthy.copy()
    collapsed[np.asarray(categories) == "C"] = [0.0, 0.0, 0.0, -1.0]
    users = rng.normal(size=(N_USERS, DIMENSION))
    users[:, 3] = np.abs(users[:, 3]) + 1.0  # a positive 4th component: C's collapsed point scores below zero
    user_vectors = _unit(users)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    user_ids = [f"u{u}" for u in range(N_USERS)]
    train_items = rng.choice(len(item_ids), size=N_USERS)
    test_items = (train_items + 1 + rng.integers(0, len(item_ids) - 1, size=N_USERS)) % len(item_ids)
    table = pa.table({
        "user_id": user_ids + user_ids,
        "item_id": [item_ids[i] for i in train_items] + [item_ids[i] for i in test_items],
        "event_timestamp": pa.array([start + timedelta(days=u) for u in range(N_USERS)]
                                    + [start + timedelta(days=100 + u) for u in range(N_USERS)],
                                    type=pa.timestamp("us", tz="UTC")),
        "split": ["train"] * N_USERS + ["test"] * N_USERS,
        "user_features__id": user_ids + user_ids,
    })
    return MonitorWorld(item_ids, categories, healthy, collapsed, user_vectors, MonitorInputs.from_training_set(table))


def _query_tower(path: Path, world: MonitorWorld, *, version: int) -> None:
    # big table rows: the reference tower's small random bias does not move the normalised query vectors
    table = np.vstack([np.zeros((1, DIMENSION)), world.user_vectors * 1e4]).astype(np.float32)
    build_reference_tower(
        path,
        features=[ReferenceFeature("user_features__id", "categorical", tuple(f"u{u}" for u in range(N_USERS)))],
        dimension=DIMENSION, model_name="movies", model_version=version, tables={"user_features__id": table},
    )


def add_version(registry, vectors, world: MonitorWorld, root: Path, *, collapsed: bool,
                with_inputs: bool = True) -> int:
    """Register the next version (reference towers + spec), write and verify its collection, mark it indexed."""
    latest = max((m.latest_version or 0 for m in registry.list_models()), default=0)
    version = latest + 1
    folder = root / "movies" / f"v{version}"
    folder.mkdir(parents=True)
    _query_tower(folder / "query.onnx", world, version=version)
    _query_tower(folder / "item.onnx", world, version=version)
    (folder / "spec.json").write_text(json.dumps({"model": "movies", "version": version}))
    if with_inputs:
        world.inputs.write(folder)
    artifacts = {n: (str(folder / n), hashlib.sha256((folder / n).read_bytes()).hexdigest())
                 for n in ("query.onnx", "item.onnx", "spec.json")}
    registry.register_version("movies", artifacts=artifacts, feature_service="fs", features=["user_features__id"],
                              training_config={}, fingerprint="f" * 64, time_window=None, estimator_path=None,
                              metrics={}, actor="test", version=version)
    name = collection_name("movies", version)
    matrix = world.collapsed if collapsed else world.healthy
    vectors.create_collection(name, dimension=DIMENSION)
    vectors.upsert(name, world.item_ids, matrix, [{"category": c} for c in world.categories])  # buckets from counts
    registry.record_collection("movies", version, name=name, point_count=len(world.item_ids), dimension=DIMENSION,
                               distance="cosine", verified=True)
    registry.mark_indexed("movies", version, actor="test")
    return version
