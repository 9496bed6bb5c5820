"""The manifest of a serving bundle: every fact a service needs to reproduce ``towerctl recommend`` without this
platform (``examples/serve_with_onnxruntime.py`` reads it; the README's "Serving from another service" describes it).

    format_version   1
    model, version   the model version the bundle serves
    files            file name -> sha256 (query.onnx, feature_store.yaml)
    query_tower      file, output name, dimension, and per input: kind, dtype, shape, padded length, pad value and
                     the value of a missing feature ("" for strings, NaN for numbers)
    features         the Feast feature service to call, full_feature_names = true, the entity row, the full feature
                     names to read, which input takes the user id itself, features served as elapsed time
    vectors          the backend (qdrant-server: URL, API key variable; qdrant-edge: root folder, alias pointer file,
                     how to open a shard), the alias to search, the version's collection, distance, dimension
    exclusion        the feature listing the user's recent items and how many hits to over-fetch
    version_check    the payload field to compare with ``version``, and what to do when it differs
    payload_fields   where a hit's payload keeps the item id, version, category and display text
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from towers.onnx.contract import OUTPUT_NAME
from tower_platform.datasets.layout import DISPLAY_FIELD
from tower_platform.vectors.store import CATEGORY_FIELD

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.serving.onnx_tower import TowerMetadata

MANIFEST_FORMAT = 1
MANIFEST_FILE = "manifest.json"
QUERY_TOWER_FILE = "query.onnx"
FEATURE_STORE_FILE = "feature_store.yaml"
EDGE_OPEN_RULE = (
    "a shard folder admits one opener at a time (its write-ahead log is locked): copy the collection folder the "
    "alias points to into a private folder and open the copy (open it in place only when no other process, "
    "towerctl included, opens that collection while the service runs)"
)


def input_rules(metadata: TowerMetadata) -> list[dict[str, Any]]:
    """How each input of the query tower is passed: dtype, shape, padded length, pad value, missing value."""
    rules = []
    for spec in metadata.inputs:
        rule: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "dtype": spec.dtype, "shape": list(spec.shape)}
        if spec.kind == "numeric":
            rule.update(missing="NaN", note="float32; a missing value (None) is passed as NaN")
        elif spec.kind == "categorical":
            rule.update(missing="", note="string; a missing value (None) is passed as the empty string")
        else:
            rule.update(
                padded_length=spec.max_len, pad_value="", missing="",
                note=f"strings [B, {spec.max_len}]: the first {spec.max_len} values of the list as served, padded "
                     "with the empty string; a missing list is all empty strings",
            )
        rules.append(rule)
    return rules


def build_manifest(
    *,
    model: str,
    version: int,
    metadata: TowerMetadata,
    sha256: Mapping[str, str],
    feature_names: Sequence[str],
    elapsed_features: Mapping[str, float],
    project: str | None,
    vectors: Mapping[str, Any],
    alias: str,
    collection: str,
    distance: str,
) -> dict[str, Any]:
    """The manifest of the bundle of ``model`` ``version`` (see the module docstring for the fields)."""
    contract = metadata.serving
    version_field = contract.payload_version_field
    item_field = contract.payload_item_field
    return {
        "format_version": MANIFEST_FORMAT,
        "model": model,
        "version": int(version),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {name: {"sha256": digest} for name, digest in sorted(sha256.items())},
        "query_tower": {
            "file": QUERY_TOWER_FILE,
            "output": OUTPUT_NAME,
            "dimension": metadata.dimension,
            "normalized": True,
            "inputs": input_rules(metadata),
        },
        "features": {
            "feature_store_yaml": FEATURE_STORE_FILE,
            "project": project,
            "feature_service": contract.query_feature_service,
            "full_feature_names": True,
            "entity_key": contract.entity_key,
            "entity_row": {contract.entity_key: "<user id>"},
            "feature_names": list(feature_names),
            "user_id_input": contract.user_id_input,
            "elapsed_features": {
                name: {"unit_seconds": float(unit), "rule": "(now - value) / unit_seconds, value in epoch seconds"}
                for name, unit in sorted(elapsed_features.items())
            },
            "call": (
                f"store.get_online_features(features=store.get_feature_service('{contract.query_feature_service}'), "
                f"entity_rows=[{{'{contract.entity_key}': user_id}}], full_feature_names=True)"
            ),
        },
        "vectors": {**vectors, "alias": alias, "collection": collection, "distance": distance,
                    "dimension": metadata.dimension},
        "exclusion": {
            "feature": contract.exclude_feature,
            "rule": "drop from the results every item of this feature's value (the whole list as Feast serves it)",
            "over_fetch": "ask the search for k + len(value) hits, drop the excluded ones, keep the first k",
        },
        "version_check": {
            "payload_field": version_field,
            "expected": int(version),
            "rule": (
                f"refuse every result holding a hit whose payload['{version_field}'] is not {int(version)}: the "
                "alias has moved to another version's vectors; fetch the serving bundle of that version"
            ),
        },
        "payload_fields": {"item_id": item_field, "model_version": version_field, "category": CATEGORY_FIELD,
                           "display": DISPLAY_FIELD},
    }
