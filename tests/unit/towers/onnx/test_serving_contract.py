"""The serving contract in a tower file's metadata: written as declared, read back, derived for older exports."""

from __future__ import annotations

import json

import pytest

from towers.errors import TowersArtifactError
from towers.onnx import SERVING_KEY, ServingContract, TowerFileMetadata

RECENT = "user_history__recent_items"
INPUTS = [
    {"name": "user_id", "kind": "categorical", "dtype": "string", "shape": ["batch"], "max_len": None},
    {"name": RECENT, "kind": "multi_categorical", "dtype": "string", "shape": ["batch", 20], "max_len": 20},
    {"name": "user_history__days_since_first", "kind": "numeric", "dtype": "float32", "shape": ["batch"], "max_len": None},
]
SCHEMA = {
    "user_id": "user_id",
    "query": [{"name": RECENT, "vocab_group": "item_id"}, {"name": "user_history__days_since_first"}],
    "metadata": {"query_service": "query_features", "item_service": "item_features"},
}


def _values(**extra: str) -> dict[str, str]:
    return {"format_version": "1", "model_name": "movies", "model_version": "2", "dimension": "16",
            "inputs": json.dumps(INPUTS), "schema": json.dumps(SCHEMA),
            "feature_service": "query_features+item_features", **extra}


def test_a_declared_contract_round_trips_through_the_metadata() -> None:
    contract = ServingContract(
        query_feature_service="customer_query", item_feature_service="product_items", entity_key="customer_id",
        exclude_feature=RECENT, elapsed_features={"user_history__days_since_first": 86400.0},
    )
    info = TowerFileMetadata.parse(_values(**contract.to_metadata()), source="query.onnx")
    read = info.serving
    assert read.declared is True
    assert (read.query_feature_service, read.item_feature_service, read.entity_key) == (
        "customer_query", "product_items", "customer_id")
    assert read.full_feature_names is True and read.exclude_feature == RECENT
    assert (read.payload_version_field, read.payload_item_field) == ("model_version", "item_id")
    assert read.elapsed_features == {"user_history__days_since_first": 86400.0}
    assert read.user_id_input == "user_id"  # the schema's user id is one of the tower's inputs (DAT)


def test_an_older_export_without_the_key_gets_the_contract_derived_from_its_schema() -> None:
    info = TowerFileMetadata.parse(_values(), source="query.onnx")
    read = info.serving
    assert read.declared is False
    assert (read.query_feature_service, read.item_feature_service) == ("query_features", "item_features")
    assert read.exclude_feature == RECENT  # the query list in the item-id vocabulary
    assert read.entity_key == "user_id" and read.payload_version_field == "model_version"
    assert read.elapsed_features == {}  # unknown to an older file: the serving bundle fills it from the feature store


def test_an_older_export_without_schema_metadata_reads_the_services_from_its_label() -> None:
    schema = {**SCHEMA, "metadata": {}, "query": []}
    info = TowerFileMetadata.parse(_values(schema=json.dumps(schema)), source="query.onnx")
    assert (info.serving.query_feature_service, info.serving.item_feature_service) == ("query_features", "item_features")
    assert info.serving.exclude_feature == RECENT  # by its name, without a vocabulary group


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "malformed 'serving'"),
        (json.dumps({"format": 9}), "serving format 9"),
        (json.dumps({"format": 1, "exclude_feature": "user_history__n_interactions"}), "not a list input"),
    ],
)
def test_a_damaged_contract_is_named(raw: str, message: str) -> None:
    with pytest.raises(TowersArtifactError, match=message) as caught:
        TowerFileMetadata.parse(_values(**{SERVING_KEY: raw}), source="q.onnx")
    assert "q.onnx" in str(caught.value) and "re-export" in str(caught.value)
