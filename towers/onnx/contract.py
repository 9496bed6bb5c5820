"""The contract of an exported tower file: inputs, output, metadata, and Arrow rows -> ONNX inputs.

Inputs (one per feature, named as in the FeatureSchema; dynamic batch axis B):
    categorical        tensor(string) [B]            "" = missing
    multi_categorical  tensor(string) [B, max_len]   padded with ""
    numeric            tensor(float)  [B]            NaN = missing
Output: ``embedding`` float32 [B, D].
Metadata (``metadata_props``, all strings): format_version, model_name, model_version, feature_service (a label of
the services used, ``query+item``), dimension, temperature, schema (JSON), tower ("query" | "item"), inputs (JSON
list of {name, dtype, shape, kind, max_len}), output, serving (JSON: the feature service to call, full feature
names, the exclusion rule, the payload version field; ``towers/onnx/serving.py``). ``TowerFileMetadata.parse`` is
the one reader of these keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from towers.errors import OnnxInputError, TowersArtifactError
from towers.features.encoder import as_strings, numeric_values, padded_list_values
from towers.features.schema import FeatureSpec
from towers.onnx.serving import ServingContract

FORMAT_VERSION = "1"
OUTPUT_NAME = "embedding"
REQUIRED_METADATA = ("format_version", "model_name", "model_version", "dimension", "inputs")


@dataclass(frozen=True)
class TowerInput:
    """One declared input of a tower file."""

    name: str
    kind: str  # categorical | multi_categorical | numeric
    dtype: str  # "string" | "float32"
    shape: tuple[Any, ...]
    max_len: int | None = None

    def spec(self, side: str = "query") -> FeatureSpec:
        """The feature spec the conversion of this input uses (``side`` is a label only)."""
        return FeatureSpec(name=self.name, side=side, kind=self.kind, max_len=self.max_len)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TowerFileMetadata:
    """The parsed ``metadata_props`` of a tower file."""

    model_name: str
    model_version: str
    dimension: int
    inputs: tuple[TowerInput, ...]
    tower: str = "query"  # "query" | "item"
    feature_service: str | None = None
    temperature: float | None = None
    schema: dict[str, Any] = field(default_factory=dict)
    format_version: str = FORMAT_VERSION
    serving: ServingContract = field(default_factory=lambda: ServingContract(query_feature_service=None))
    raw: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, values: dict[str, str], *, source: str) -> TowerFileMetadata:
        """``metadata_props`` as a dict -> TowerFileMetadata; raises TowersArtifactError naming ``source`` and the
        missing or malformed key."""
        if values.get("format_version") != FORMAT_VERSION:
            raise TowersArtifactError(
                f"ONNX tower {source} has tower format {values.get('format_version')!r}, expected {FORMAT_VERSION}; "
                "re-export the model."
            )
        missing = [key for key in REQUIRED_METADATA if key not in values]
        if missing:
            raise TowersArtifactError(f"ONNX tower {source} lacks metadata {missing}; re-export the model.")
        try:
            inputs = tuple(
                TowerInput(name=i["name"], kind=i["kind"], dtype=i["dtype"], shape=tuple(i["shape"]),
                           max_len=i.get("max_len"))
                for i in json.loads(values["inputs"])
            )
            temperature = float(values["temperature"]) if values.get("temperature") else None
            schema = json.loads(values["schema"]) if values.get("schema") else {}
            dimension = int(values["dimension"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TowersArtifactError(f"ONNX tower {source} has malformed metadata ({exc}); re-export the model.") from exc
        serving = ServingContract.parse(
            values,
            schema=schema,
            input_names=[i.name for i in inputs],
            multi_inputs=[i.name for i in inputs if i.kind == "multi_categorical"],
            source=source,
        )
        return cls(
            model_name=values["model_name"],
            model_version=values["model_version"],
            dimension=dimension,
            inputs=inputs,
            tower="item" if values.get("tower") == "item" else "query",
            feature_service=values.get("feature_service") or None,
            temperature=temperature,
            schema=schema,
            format_version=values["format_version"],
            serving=serving,
            raw=dict(values),
        )

    def specs(self) -> tuple[FeatureSpec, ...]:
        return tuple(i.spec(self.tower) for i in self.inputs)


# --- Arrow -> ONNX inputs -------------------------------------------------------------------------------------------


def _string_values(values: pa.Array) -> np.ndarray:
    return pc.fill_null(as_strings(values), "").to_numpy(zero_copy_only=False).astype(object)


def table_to_onnx_inputs(table: pa.Table, specs: tuple[FeatureSpec, ...] | list[FeatureSpec]) -> dict[str, np.ndarray]:
    """An Arrow table as the feature store serves it -> the ONNX input dict (lists padded with "" or truncated to
    max_len; None -> "" for strings and NaN for numbers)."""
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name not in table.column_names:
            raise OnnxInputError(f"column {spec.name!r} is missing from the table; the ONNX tower needs it as an input")
        column = table.column(spec.name).combine_chunks()
        if spec.kind == "numeric":
            feeds[spec.name] = numeric_values(column)  # [N] float32
        elif spec.kind == "categorical":
            feeds[spec.name] = _string_values(column)  # [N] object (str)
        else:
            assert spec.max_len is not None
            rows, cols, values = padded_list_values(column, max_len=spec.max_len)
            padded = np.full((len(column), spec.max_len), "", dtype=object)  # [N, L]
            padded[rows, cols] = _string_values(values)
            feeds[spec.name] = padded
    return feeds


_NUMBER_TYPES = (int, float)


def values_to_onnx_inputs(
    columns: Mapping[str, Sequence[Any]], specs: tuple[FeatureSpec, ...] | list[FeatureSpec]
) -> dict[str, np.ndarray] | None:
    """Plain Python values (column -> one value per row, as an online read returns them) -> the ONNX input dict,
    without Arrow: the same tensors as :func:`table_to_onnx_inputs` on the table of those values, ~10x faster for a
    few rows. Only str / None (categorical), lists of str / None or None (lists) and int / float / None (numeric)
    take this path; anything else (numpy scalars, other types, a missing column, unequal lengths) returns None, and the
    caller converts through Arrow instead."""
    lengths = {len(columns[spec.name]) for spec in specs if spec.name in columns}
    if len(lengths) > 1 or any(spec.name not in columns for spec in specs):
        return None
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        values = columns[spec.name]
        if spec.kind == "numeric":
            if not all(v is None or type(v) in _NUMBER_TYPES for v in values):
                return None
            feeds[spec.name] = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64).astype(
                np.float32)  # [N]: through float64 like Arrow's cast
        elif spec.kind == "categorical":
            if not all(v is None or type(v) is str for v in values):
                return None
            feeds[spec.name] = np.array(["" if v is None else v for v in values], dtype=object)  # [N]
        else:
            assert spec.max_len is not None
            padded = np.full((len(values), spec.max_len), "", dtype=object)  # [N, L]
            for row, items in enumerate(values):
                if items is None:
                    continue
                if type(items) not in (list, tuple) or not all(v is None or type(v) is str for v in items):
                    return None
                for col, item in enumerate(items[: spec.max_len]):
                    if item is not None:
                        padded[row, col] = item
            feeds[spec.name] = padded
    return feeds


def input_description(spec: FeatureSpec) -> dict[str, Any]:
    if spec.kind == "numeric":
        return {"name": spec.name, "dtype": "float32", "shape": ["batch"], "kind": spec.kind, "max_len": None}
    shape: list[Any] = ["batch"] if spec.kind == "categorical" else ["batch", spec.max_len]
    return {"name": spec.name, "dtype": "string", "shape": shape, "kind": spec.kind, "max_len": spec.max_len}
