"""Top-k items for a user from a model's production version: online features -> query.onnx -> search on the alias."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tower_platform.errors import ConflictError

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.points import VectorStore

QUERY_TOWER = "query.onnx"


def recommend(
    registry: SqlRegistryStore,
    vectors: VectorStore,
    feature_store: Any,
    *,
    model: str,
    user_id: str,
    k: int = 10,
    category: str | None = None,
    wrap_features: Callable[[Any, str], Any] | None = None,
) -> Any:
    """Top-k items for a user from the production version: online features -> query.onnx -> search on the alias.

    ``feature_store`` serves online features (``online_features(service_name, entity_rows)``, e.g.
    :class:`~tower_platform.features.store.FeastFeatureStore`); it is first read once the production version and
    its tower are known, so a store that imports Feast lazily pays for it only then. The feature service called is
    the one the tower's serving contract names. ``wrap_features(source, user_key)``, when given, wraps the query
    feature source (the CLI records there whether the user had any online feature).
    """
    from tower_platform.serving.onnx_tower import OnnxTower
    from tower_platform.serving.retriever import OnlineQueryFeatures, Retriever

    production = registry.production_version(model)
    if production is None:
        raise ConflictError(
            f"Model '{model}' has no production version; promote one with `towerctl models promote {model} N`."
        )
    artifact = production.artifact(QUERY_TOWER)
    tower = OnnxTower(artifact.path, expected_sha256=artifact.sha256)
    service = tower.metadata.serving.query_feature_service
    if not service:
        raise ConflictError(
            f"query.onnx of '{model}' version {production.version} names no query feature service; export it again."
        )
    user_key = str(tower.metadata.schema.get("user_id") or "user_id")
    features: Any = OnlineQueryFeatures(feature_store, service_name=service, user_key=user_key)
    if wrap_features is not None:
        features = wrap_features(features, user_key)
    retriever = Retriever(vectors, tower, features, model=model, expected_version=production.version)
    return retriever.recommend(user_id, k=k, category=category)
