"""qdrant-client's records and enums in the platform's terms, and which exceptions come from the client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tower_platform.vectors.points import ITEM_ID_FIELD, StoredPoint


def is_client_error(exc: BaseException) -> bool:
    """Exceptions of qdrant_client, httpx and grpc (translated into ours), without importing grpc eagerly."""
    module = type(exc).__module__ or ""
    return module.startswith(("qdrant_client", "httpx", "grpc", "httpcore")) or isinstance(
        exc, (ConnectionError, TimeoutError, OSError)
    )


def stored_point(record: Any, *, with_vectors: bool) -> StoredPoint:
    vector = None
    if with_vectors and record.vector is not None:
        raw = record.vector
        if isinstance(raw, Mapping):
            raw = next(iter(raw.values()))
        vector = np.asarray(raw, dtype=np.float32)  # [D]
    payload = dict(record.payload or {})
    return StoredPoint(item_id=str(payload.get(ITEM_ID_FIELD)), vector=vector, payload=payload)


def to_qdrant_distance(distance: str) -> Any:
    from qdrant_client import models

    return {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT, "euclid": models.Distance.EUCLID}[distance]


def from_qdrant_distance(distance: Any) -> str:
    value = str(getattr(distance, "value", distance)).lower()
    return {"cosine": "cosine", "dot": "dot", "euclid": "euclid"}.get(value, value)
