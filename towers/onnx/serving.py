"""The serving contract of a query tower: what a service must know to feed it and to read its search results.

Written into ``metadata_props`` under the key ``serving`` (JSON) by the export, so that a service holding only
``query.onnx`` knows::

    query_feature_service   the feature service to call for a user's query features (a service, not a label)
    item_feature_service    the feature service of the item features (what the item vectors were computed from)
    entity_key              the join key of the entity row: ``{entity_key: <user id>}``
    full_feature_names      True: request ``<view>__<feature>`` names, the tower's input names (short names would
                            match no input and the tower would run on missing values only)
    exclude_feature         the query input listing the user's recent items: every item of its value (the whole
                            list) is dropped from the results; ask the search for k + len(list) hits
    payload_version_field   the payload field of every item vector holding the version that wrote it; a hit whose
                            value is not this tower's ``model_version`` belongs to another version: refuse it
    payload_item_field      the payload field holding the item id
    elapsed_features        feature -> unit in seconds: the feature store serves the epoch seconds of a past event,
                            the tower takes ``(now - value) / unit``

Older exports carry no ``serving`` key; :meth:`ServingContract.parse` then derives what it can from the file's
schema and ``feature_service`` label (``declared`` is False, ``elapsed_features`` empty).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from towers.errors import TowersArtifactError

SERVING_KEY = "serving"
SERVING_FORMAT = 1
PAYLOAD_VERSION_FIELD = "model_version"
PAYLOAD_ITEM_FIELD = "item_id"
ITEM_ID_VOCAB = "item_id"  # the vocabulary group of item ids: a query list in it holds the user's recent items
_RECENT_ITEMS_SUFFIX = "recent_items"


@dataclass(frozen=True)
class ServingContract:
    """How to feed a query tower (feature service, names, entity key) and what to do with its search results."""

    query_feature_service: str | None
    item_feature_service: str | None = None
    entity_key: str = "user_id"
    full_feature_names: bool = True
    exclude_feature: str | None = None
    payload_version_field: str = PAYLOAD_VERSION_FIELD
    payload_item_field: str = PAYLOAD_ITEM_FIELD
    elapsed_features: dict[str, float] = field(default_factory=dict)
    user_id_input: str | None = None  # the tower input that takes the user id itself (DAT), derived from the inputs
    declared: bool = True  # False: derived from an older export without the ``serving`` key

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entry of this contract."""
        body = {
            "format": SERVING_FORMAT,
            "query_feature_service": self.query_feature_service,
            "item_feature_service": self.item_feature_service,
            "entity_key": self.entity_key,
            "full_feature_names": self.full_feature_names,
            "exclude_feature": self.exclude_feature,
            "payload_version_field": self.payload_version_field,
            "payload_item_field": self.payload_item_field,
            "elapsed_features": {k: float(v) for k, v in sorted(self.elapsed_features.items())},
        }
        return {SERVING_KEY: json.dumps(body, sort_keys=True)}

    @classmethod
    def parse(
        cls,
        values: Mapping[str, str],
        *,
        schema: Mapping[str, Any],
        input_names: Sequence[str],
        multi_inputs: Sequence[str],
        source: str,
    ) -> ServingContract:
        """The contract of a file's ``metadata_props`` (derived from its schema when the file predates it). For a
        query tower the exclusion feature must be one of its list inputs; an item tower carries the same contract."""
        user_id = str(schema.get("user_id") or "user_id")
        user_id_input = user_id if user_id in input_names else None
        raw = values.get(SERVING_KEY)
        if not raw:
            return _derived(values, schema=schema, multi_inputs=multi_inputs, user_id_input=user_id_input)
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or int(body.get("format", 0)) != SERVING_FORMAT:
                raise ValueError(f"serving format {body.get('format') if isinstance(body, dict) else body!r}")
            elapsed = {str(k): float(v) for k, v in dict(body.get("elapsed_features") or {}).items()}
            exclude = body.get("exclude_feature")
            if exclude is not None and values.get("tower") != "item" and exclude not in multi_inputs:
                raise ValueError(f"exclude_feature {exclude!r} is not a list input of the tower")
            return cls(
                query_feature_service=body.get("query_feature_service"),
                item_feature_service=body.get("item_feature_service"),
                entity_key=str(body.get("entity_key") or user_id),
                full_feature_names=bool(body.get("full_feature_names", True)),
                exclude_feature=exclude,
                payload_version_field=str(body.get("payload_version_field") or PAYLOAD_VERSION_FIELD),
                payload_item_field=str(body.get("payload_item_field") or PAYLOAD_ITEM_FIELD),
                elapsed_features=elapsed,
                user_id_input=user_id_input,
            )
        except (TypeError, ValueError) as exc:
            raise TowersArtifactError(
                f"ONNX tower {source} has a malformed '{SERVING_KEY}' metadata entry ({exc}); re-export the model."
            ) from exc


def recent_items_input(schema: Mapping[str, Any], multi_inputs: Sequence[str]) -> str | None:
    """The query list input in the item-id vocabulary (the user's recent items), else one named ``*recent_items``."""
    for spec in schema.get("query", []) or []:
        if spec.get("vocab_group") == ITEM_ID_VOCAB and spec.get("name") in multi_inputs:
            return str(spec["name"])
    return next((name for name in multi_inputs if name.endswith(_RECENT_ITEMS_SUFFIX)), None)


def _derived(
    values: Mapping[str, str], *, schema: Mapping[str, Any], multi_inputs: Sequence[str], user_id_input: str | None
) -> ServingContract:
    """An older export: services from the schema's metadata or the ``query+item`` label, the rest by convention."""
    metadata = dict(schema.get("metadata") or {})
    label = [part for part in str(values.get("feature_service") or "").split("+") if part]
    return ServingContract(
        query_feature_service=metadata.get("query_service") or (label[0] if label else None),
        item_feature_service=metadata.get("item_service") or (label[1] if len(label) > 1 else None),
        entity_key=str(metadata.get("user_key") or schema.get("user_id") or "user_id"),
        exclude_feature=recent_items_input(schema, multi_inputs),
        user_id_input=user_id_input,
        declared=False,
    )
