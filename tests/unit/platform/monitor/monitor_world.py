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


def _query_tower(path: Path, user_ids: list[str], user_vectors: np.ndarray, *, version: int) -> None:
    # big table rows: the reference tower's small random bias does not move the normalised query vectors
    dimension = user_vectors.shape[1]
    table = np.vstack([np.zeros((1, dimension)), user_vectors * 1e4]).astype(np.float32)
    build_reference_tower(
        path,
        features=[ReferenceFeature("user_features__id", "categorical", tuple(user_ids))],
        dimension=dimension, model_name="movies", model_version=version, tables={"user_features__id": table},
    )


def register_indexed_version(registry, vectors, root: Path, *, item_ids, categories, item_vectors: np.ndarray,
                             user_ids: list[str], user_vectors: np.ndarray, inputs: MonitorInputs | None) -> int:
    """Register the next version of "movies" (reference towers over ``user_ids`` + spec), write and verify its
    collection (payload: category; popularity buckets from the training counts), mark it indexed."""
    latest = max((m.latest_version or 0 for m in registry.list_models()), default=0)
    version = latest + 1
    folder = root / "movies" / f"v{version}"
    folder.mkdir(parents=True)
    for tower in ("query.onnx", "item.onnx"):
        _query_tower(folder / tower, user_ids, user_vectors, version=version)
    (folder / "spec.json").write_text(json.dumps({"model": "movies", "version": version}))
    if inputs is not None:
        inputs.write(folder)
    artifacts = {n: (str(folder / n), hashlib.sha256((folder / n).read_bytes()).hexdigest())
                 for n in ("query.onnx", "item.onnx", "spec.json")}
    registry.register_version("movies", artifacts=artifacts, feature_service="fs", features=["user_features__id"],
                              training_config={}, fingerprint="f" * 64, time_window=None, estimator_path=None,
                              metrics={}, actor="test", version=version)
    name = collection_name("movies", version)
    dimension = item_vectors.shape[1]
    vectors.create_collection(name, dimension=dimension)
    for start in range(0, len(item_ids), 4_096):
        stop = start + 4_096
        vectors.upsert(name, list(item_ids[start:stop]), item_vectors[start:stop],
                       [{"category": c} for c in categories[start:stop]])
    registry.record_collection("movies", version, name=name, point_count=len(item_ids), dimension=dimension,
                               distance="cosine", verified=True)
    registry.mark_indexed("movies", version, actor="test")
    return version


def add_version(registry, vectors, world: MonitorWorld, root: Path, *, collapsed: bool,
                with_inputs: bool = True) -> int:
    """Register the next version (reference towers + spec), write and verify its collection, mark it indexed."""
    return register_indexed_version(
        registry, vectors, root, item_ids=world.item_ids, categories=world.categories,
        item_vectors=world.collapsed if collapsed else world.healthy, user_ids=[f"u{u}" for u in range(N_USERS)],
        user_vectors=world.user_vectors, inputs=world.inputs if with_inputs else None,
    )
