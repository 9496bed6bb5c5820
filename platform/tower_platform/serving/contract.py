"""The serving contract a version's towers carry (``towers/onnx/serving.py``), built from the platform's facts.

The export writes it into both towers' ``metadata_props``; the retriever, ``towerctl models serving-bundle`` and a
service holding only ``query.onnx`` read it back. Its facts, and where they come from here:

    query / item feature service   the feature schema's metadata (the services the training set was built from)
    entity key                     the Feast join key of users (an existing repository may name it otherwise)
    full feature names             always: the towers' inputs are ``<view>__<feature>``
    exclusion                      the query list in the item-id vocabulary (the user's recent items)
    payload version field          :data:`tower_platform.naming.PAYLOAD_VERSION_FIELD`, written by the embedding writer
    elapsed features               the feature store's features served as ``(now - stored epoch s) / unit``
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tower_platform.naming import PAYLOAD_VERSION_FIELD
from tower_platform.vectors.store import ITEM_ID_FIELD

if TYPE_CHECKING:  # pragma: no cover
    from towers.features import FeatureSchema
    from towers.onnx.serving import ServingContract


def serving_contract(schema: FeatureSchema) -> ServingContract:
    """The contract of towers trained on ``schema`` (``FeastFeatureStore.feature_schema()``)."""
    from towers.onnx.serving import ITEM_ID_VOCAB, ServingContract

    metadata = dict(schema.metadata)
    exclude = next(
        (f.name for f in schema.query if f.kind == "multi_categorical" and f.vocab_group == ITEM_ID_VOCAB), None
    )
    return ServingContract(
        query_feature_service=metadata.get("query_service"),
        item_feature_service=metadata.get("item_service"),
        entity_key=str(metadata.get("user_key") or schema.user_id),
        full_feature_names=True,
        exclude_feature=exclude,
        payload_version_field=PAYLOAD_VERSION_FIELD,
        payload_item_field=ITEM_ID_FIELD,
        elapsed_features={str(k): float(v) for k, v in dict(metadata.get("elapsed_features") or {}).items()},
    )
