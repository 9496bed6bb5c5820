"""An ONNX tower at run time: load it with onnxruntime, read its metadata, feed it feature rows, get unit vectors.

The contract of a tower file (written by ``towers/export.py``):
    inputs   one per feature, named as the feature: categorical -> tensor(string) [B] ("" = missing),
             multi_categorical -> tensor(string) [B, max_len] padded with "", numeric -> tensor(float) [B], NaN = missing
    output   ``embedding`` float32 [B, D], L2-normalised
    metadata_props  model_name, model_version, feature_service, inputs (JSON list of {name, dtype, shape, kind,
             max_len}), dimension, temperature, schema (JSON)

Feature rows arrive as Feast serves them: an Arrow table (the item corpus) or a mapping column -> list of values
(online features). Conversion is vectorised with pyarrow; the only Python loop is over features, never over rows.

A small but real tower of this contract, for tests and benchmarks, lives in ``tests/reference_tower.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tower_platform.errors import ConflictError, InputError, IntegrityError, NotFoundError
from tower_platform.registry.artifact import file_sha256

OUTPUT_NAME = "embedding"
_KINDS = ("categorical", "multi_categorical", "numeric")
_ARROW_TYPES = {"categorical": pa.string(), "multi_categorical": pa.list_(pa.string()), "numeric": pa.float64()}
_REQUIRED_METADATA = ("model_name", "model_version", "dimension")


@dataclass(frozen=True)
class TowerInput:
    name: str
    kind: str  # categorical | multi_categorical | numeric
    max_len: int | None = None


@dataclass(frozen=True)
class TowerMetadata:
    model_name: str
    model_version: int
    dimension: int
    feature_service: str | None
    temperature: float | None
    inputs: tuple[TowerInput, ...]
    schema: dict[str, Any] = field(default_factory=dict)

    @property
    def item_id_column(self) -> str:
        return str(self.schema.get("item_id") or "item_id")

    @property
    def item_category_column(self) -> str | None:
        value = self.schema.get("item_category")
        return str(value) if value else None


class OnnxTower:
    """One tower file run by onnxruntime on CPU: ``embed(rows) -> [N, D]`` float32, unit-norm rows."""

    def __init__(self, path: str | Path, *, expected_sha256: str | None = None, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise NotFoundError(f"ONNX tower {self.path} does not exist; export the model version again.")
        if expected_sha256 is not None:
            actual = file_sha256(self.path)
            if actual != expected_sha256:
                raise IntegrityError(
                    f"ONNX tower {self.path} has sha256 {actual[:12]}… but the registry recorded "
                    f"{expected_sha256[:12]}…; the file was changed after registration: restore it or register a new version."
                )
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # no busy-waiting between runs: idle spinning threads would take the cores the Qdrant upsert needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
            raise InputError(f"ONNX tower {self.path} cannot be loaded by onnxruntime ({exc}); export it again.") from exc
        self.metadata = _read_metadata(self.path, self._session)
        self._specs = _feature_specs(self.metadata.inputs)
        self._output = OUTPUT_NAME if OUTPUT_NAME in {o.name for o in self._session.get_outputs()} else None

    @property
    def dimension(self) -> int:
        return self.metadata.dimension

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.metadata.inputs)

    def feeds(self, rows: Any) -> dict[str, np.ndarray]:
        """The input dict for onnxruntime from an Arrow table or a mapping column -> values (one list per column).

        Columns are first read as the types the contract names (string, list<string>, float64); the conversion to
        tensors is the towers' own (``towers.onnx.table_to_onnx_inputs``), so serving and export cannot drift."""
        from towers.onnx import OnnxInputError, table_to_onnx_inputs

        table = _as_table(rows, self.metadata.inputs)
        columns = {}
        for spec in self.metadata.inputs:
            if spec.name not in table.column_names:
                raise InputError(
                    f"feature rows for ONNX tower {self.path.name} lack column '{spec.name}'; "
                    f"the tower needs {list(self.input_names)}: check the feature service of model "
                    f"'{self.metadata.model_name}' version {self.metadata.model_version}."
                )
            column = table.column(spec.name).combine_chunks()
            target = _ARROW_TYPES[spec.kind]
            columns[spec.name] = column if column.type == target else _cast(column, target, spec.name)
        try:
            return table_to_onnx_inputs(pa.table(columns), self._specs)
        except (OnnxInputError, pa.ArrowInvalid) as exc:
            raise InputError(f"feature rows for ONNX tower {self.path.name} cannot be read ({exc}).") from exc

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """One onnxruntime call: feeds -> [B, D] float32."""
        try:
            (out,) = self._session.run([self._output] if self._output else None, dict(feeds))[:1]
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"ONNX tower {self.path} failed on its inputs ({exc}); check the feature values.") from exc
        return np.asarray(out, dtype=np.float32)

    def embed(self, rows: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Embeddings of every row, computed in batches: [N, D] float32."""
        table = _as_table(rows, self.metadata.inputs)
        parts = [self.run(self.feeds(table.slice(start, batch_size))) for start in range(0, table.num_rows, batch_size)]
        if not parts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate(parts, axis=0)  # [N, D]


def _read_metadata(path: Path, session: Any) -> TowerMetadata:
    props = dict(session.get_modelmeta().custom_metadata_map)
    missing = [k for k in _REQUIRED_METADATA if k not in props]
    if missing:
        raise ConflictError(f"ONNX tower {path} lacks metadata {missing}; export it again with towers/export.py.")
    declared = {d["name"]: d for d in json.loads(props.get("inputs") or "[]")}
    inputs: list[TowerInput] = []
    for node in session.get_inputs():
        spec = declared.get(node.name, {})
        kind = spec.get("kind") or _kind_from_node(node)
        max_len = spec.get("max_len")
        if kind == "multi_categorical" and max_len is None and isinstance(node.shape[-1], int):
            max_len = int(node.shape[-1])
        if kind not in _KINDS:
            raise ConflictError(f"ONNX tower {path}: input '{node.name}' has unknown kind {kind!r}.")
        inputs.append(TowerInput(name=node.name, kind=kind, max_len=int(max_len) if max_len is not None else None))
    temperature = props.get("temperature")
    return TowerMetadata(
        model_name=props["model_name"],
        model_version=int(props["model_version"]),
        dimension=int(props["dimension"]),
        feature_service=props.get("feature_service"),
        temperature=float(temperature) if temperature not in (None, "") else None,
        inputs=tuple(inputs),
        schema=json.loads(props["schema"]) if props.get("schema") else {},
    )


def _kind_from_node(node: Any) -> str:
    if node.type == "tensor(string)":
        return "multi_categorical" if len(node.shape) == 2 else "categorical"
    return "numeric"


def _as_table(rows: Any, inputs: Sequence[TowerInput]) -> Any:
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, Mapping):
        types = {i.name: _ARROW_TYPES[i.kind] for i in inputs}
        columns = {}
        for name, values in rows.items():
            target = types.get(name)
            array = pa.array(values, from_pandas=True)
            if target is not None and array.type != target:
                array = _cast(array, target, name)
            columns[name] = array
        return pa.table(columns)
    raise InputError(f"feature rows of type {type(rows).__name__} cannot feed an ONNX tower; pass an Arrow table or a dict.")


def _cast(array: Any, target: Any, name: str) -> Any:
    try:
        if pa.types.is_null(array.type):
            return pa.nulls(len(array), type=target)
        if pa.types.is_list(target) and (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
            return array.cast(pa.list_(pa.string()))
        return array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"feature column '{name}' of type {array.type} cannot be read as {target}.") from exc


def _feature_specs(inputs: Sequence[TowerInput]) -> tuple[Any, ...]:
    from towers.features import FeatureSpec

    return tuple(
        FeatureSpec(name=i.name, side="query", kind=i.kind,  # side is a label only; conversion depends on the kind
                    max_len=(i.max_len or 1) if i.kind == "multi_categorical" else None)
        for i in inputs
    )
