"""Top-k items for a user from a model's production version: online features -> query.onnx -> search on the alias."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from tower_platform.errors import ConflictError

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.serving.retriever import QueryFeatureSource
    from tower_platform.vectors.points import VectorStore

QUERY_TOWER = "query.onnx"


class QueryFeatures(Protocol):
    """Opens the online query features of a feature service, keyed by the user id column ``user_key``."""

    def __call__(self, service_name: str, user_key: str) -> QueryFeatureSource: ...


def online_query_features(store: Any) -> QueryFeatures:
    """The :class:`QueryFeatures` of a feature store with ``online_features(service_name, entity_rows)``."""
    from tower_platform.serving.retriever import OnlineQueryFeatures

    return lambda service, user_key: OnlineQueryFeatures(store, service_name=service, user_key=user_key)


def recommend(
    registry: SqlRegistryStore,
    vectors: VectorStore,
    query_features: QueryFeatures,
    *,
    model: str,
    user_id: str,
    k: int = 10,
    category: str | None = None,
) -> Any:
    """Top-k items for a user from the production version: online features -> query.onnx -> search on the alias.

    ``query_features(service_name, user_key)`` is called only once the production version is known (it may open the
    slow-to-import feature store).
    """
    from tower_platform.serving.onnx_tower import OnnxTower
    from tower_platform.serving.retriever import Retriever

    production = registry.production_version(model)
    if production is None:
        raise ConflictError(
            f"Model '{model}' has no production version; promote one with `towerctl models promote {model} N`."
        )
    artifact = production.artifact(QUERY_TOWER)
    tower = OnnxTower(artifact.path, expected_sha256=artifact.sha256)
    schema = tower.metadata.schema
    service = (schema.get("metadata") or {}).get("query_service") or tower.metadata.feature_service
    features = query_features(service, str(schema.get("user_id") or "user_id"))
    retriever = Retriever(vectors, tower, features, model=model, expected_version=production.version)
    return retriever.recommend(user_id, k=k, category=category)
