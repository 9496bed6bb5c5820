"""The feature schema: the contract between the feature store side and the towers.

The platform derives it from a Feast feature service (names and types); the towers build encoders from it and the
ONNX towers take one input per feature, named exactly as here.

Column conventions of a training set (an Arrow table):
    row_id (int64), user_id (string), item_id (string), event_timestamp (timestamp, UTC), weight (float64, 1.0 for
    implicit feedback), any interaction values the dataset declares (``rating`` only when it has one), split (string:
    train / validation / test), then one column per feature, named ``<feature view>__<feature>`` as Feast returns
    them with full feature names.

Feature values as Feast serves them and as the ONNX towers accept them:
    categorical        string          missing: None in Arrow, "" at serving
    multi_categorical  list<string>    missing: None or [] in Arrow; at serving a [B, max_len] string tensor padded with ""
    numeric            float / int     missing: None or NaN in Arrow; at serving a float32 tensor with NaN
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from towers.errors import TowersInputError

ITEM_KEY = "__item_key__"  # int64 [N] batch tensor: the item's index in the item-key space (hits, frequency estimate)
WEIGHT = "__weight__"  # float32 [N] batch tensor: the reward weight r_i of an example

Kind = Literal["categorical", "multi_categorical", "numeric"]
Side = Literal["query", "item"]

KINDS: tuple[str, ...] = ("categorical", "multi_categorical", "numeric")
SIDES: tuple[str, ...] = ("query", "item")


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature of a tower.

    name: the column name in a training set and the ONNX input name (e.g. ``user_history__recent_items``).
    vocab_group: features with the same group share one vocabulary and one embedding table
        (``"item_id"`` for the item id and for the query side's recent items).
    max_len: for multi_categorical, the fixed padded length the serving tensor has.
    """

    name: str
    side: Side
    kind: Kind
    vocab_group: str | None = None
    max_len: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TowersInputError(f"feature {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.side not in SIDES:
            raise TowersInputError(f"feature {self.name!r}: side {self.side!r} is not one of {SIDES}")
        if self.kind == "multi_categorical" and (self.max_len is None or self.max_len < 1):
            raise TowersInputError(f"feature {self.name!r}: a multi_categorical feature needs max_len >= 1")


@dataclass(frozen=True)
class FeatureSchema:
    """Query and item features, plus the names of the id columns and the category feature of items."""

    query: tuple[FeatureSpec, ...]
    item: tuple[FeatureSpec, ...]
    user_id: str = "user_id"
    item_id: str = "item_id"
    item_category: str | None = None  # item feature whose value is the item's category (named by the dataset config)
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.query] + [f.name for f in self.item]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise TowersInputError(f"feature names must be unique across both towers; repeated: {dupes}")
        if any(f.side != "query" for f in self.query) or any(f.side != "item" for f in self.item):
            raise TowersInputError("query features must have side='query' and item features side='item'")

    @property
    def features(self) -> tuple[FeatureSpec, ...]:
        return self.query + self.item

    def side(self, side: Side) -> tuple[FeatureSpec, ...]:
        return self.query if side == "query" else self.item

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": [asdict(f) for f in self.query],
            "item": [asdict(f) for f in self.item],
            "user_id": self.user_id,
            "item_id": self.item_id,
            "item_category": self.item_category,
            "metadata": dict(self.metadata),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        return cls(
            query=tuple(FeatureSpec(**f) for f in data["query"]),
            item=tuple(FeatureSpec(**f) for f in data["item"]),
            user_id=data.get("user_id", "user_id"),
            item_id=data.get("item_id", "item_id"),
            item_category=data.get("item_category"),
            metadata=dict(data.get("metadata", {})),
        )
