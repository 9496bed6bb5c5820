"""The retriever: online features of a user -> ``query.onnx`` -> Qdrant search on the production alias.

It serves exactly one model version and refuses to pair a query tower with the vectors of another: the tower's
metadata, the version the registry calls production, the collection the alias points to and the ``model_version``
in the payload of every hit must all agree. The query tower's sha256 is checked against the registry's value before
the file is loaded. The items of the user's recent-items feature are excluded from the results; which feature that
is, and which payload field carries the version, come from the tower's serving contract (``towers/onnx/serving.py``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tower_platform.errors import ConflictError
from tower_platform.naming import collection_name, production_alias
from tower_platform.serving.onnx_tower import OnnxTower
from tower_platform.vectors.store import QdrantVectorStore, SearchHit

class QueryFeatureSource(Protocol):
    """Online query features of one user: feature name -> value, as Feast serves them."""

    def query_features(self, user_id: str) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class StageTimings:
    features_ms: float
    query_tower_ms: float
    search_ms: float
    total_ms: float


@dataclass(frozen=True)
class Recommendations:
    user_id: str
    model: str
    version: int
    items: list[SearchHit]
    timings: StageTimings


class Retriever:
    """Top-k items for a user from the production version of one model."""

    def __init__(
        self,
        vectors: QdrantVectorStore,
        query_tower: OnnxTower | str | Path,
        feature_source: QueryFeatureSource,
        *,
        model: str,
        expected_version: int,
        expected_sha256: str | None = None,
        recent_items_feature: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.vectors = vectors
        self.tower = (
            query_tower
            if isinstance(query_tower, OnnxTower)
            else OnnxTower(query_tower, expected_sha256=expected_sha256, threads=threads)
        )
        self.features = feature_source
        self.model = model
        self.version = int(expected_version)
        self.alias = production_alias(model)
        self._check_pairing()
        contract = self.tower.metadata.serving
        self.recent_items_feature = recent_items_feature or contract.exclude_feature
        self.version_field = contract.payload_version_field
        self.user_column = str(self.tower.metadata.schema.get("user_id") or "user_id")

    def _check_pairing(self) -> None:
        meta = self.tower.metadata
        if meta.model_name != self.model or meta.model_version != self.version:
            raise ConflictError(
                f"query tower {self.tower.path} is model '{meta.model_name}' version {meta.model_version} but the "
                f"production version of '{self.model}' is {self.version}; load the query.onnx of version {self.version}."
            )
        target = self.vectors.alias_target(self.alias)
        expected = collection_name(self.model, self.version)
        if target != expected:
            raise ConflictError(
                f"alias '{self.alias}' points to {target!r}, not '{expected}' (production version {self.version} of "
                f"'{self.model}'); the registry and Qdrant disagree: run `towerctl models reconcile {self.model}`."
            )

    def recommend(
        self,
        user_id: str,
        *,
        k: int = 10,
        category: str | None = None,
        exclude_item_ids: Sequence[str] = (),
    ) -> Recommendations:
        """Ranked items for ``user_id``, without the user's recent items (and ``exclude_item_ids``)."""
        t0 = time.perf_counter()
        row = dict(self.features.query_features(str(user_id)))
        if row.get(self.user_column) is None:  # a tower with a user-id input (DAT) needs the id itself
            row[self.user_column] = str(user_id)
        t1 = time.perf_counter()
        query = self.tower.run(self.tower.feeds({name: [row.get(name)] for name in self.tower.input_names}))[0]  # [D]
        t2 = time.perf_counter()
        hits = self.vectors.search(
            self.alias,
            query,
            limit=k,
            exclude_item_ids=_exclusions(
                row.get(self.recent_items_feature) if self.recent_items_feature else None, exclude_item_ids
            ),
            category=category,
        )
        t3 = time.perf_counter()
        stale = [h for h in hits if h.payload.get(self.version_field) != self.version]
        if stale:
            raise ConflictError(
                f"alias '{self.alias}' now serves vectors of another version than {self.version} (item "
                f"'{stale[0].item_id}' has {self.version_field} {stale[0].payload.get(self.version_field)!r}); "
                "the alias moved: reload the retriever with the new production version."
            )
        return Recommendations(
            user_id=str(user_id),
            model=self.model,
            version=self.version,
            items=hits,
            timings=StageTimings(
                features_ms=(t1 - t0) * 1e3,
                query_tower_ms=(t2 - t1) * 1e3,
                search_ms=(t3 - t2) * 1e3,
                total_ms=(t3 - t0) * 1e3,
            ),
        )


def _exclusions(recent: Any, extra: Sequence[str]) -> list[str]:
    values = list(recent) if isinstance(recent, (list, tuple, np.ndarray)) else []
    return list(dict.fromkeys(str(v) for v in [*values, *extra] if v not in (None, "")))


class OnlineQueryFeatures:
    """A :class:`QueryFeatureSource` over a feature store's ``online_features(service_name, entity_rows)``.

    The store returns columns (feature name -> list of values, one per entity row); this asks for one user and
    returns that user's row.
    """

    def __init__(self, store: Any, *, service_name: str, user_key: str = "user_id") -> None:
        self.store = store
        self.service_name = service_name
        self.user_key = user_key

    def query_features(self, user_id: str) -> Mapping[str, Any]:
        columns = self.store.online_features(self.service_name, [{self.user_key: user_id}])
        return {name: values[0] if len(values) else None for name, values in columns.items()}
