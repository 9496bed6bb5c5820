"""An ONNX tower at run time for the platform: the towers' one reader (``towers.onnx.load_onnx_tower``) with the
registry's sha256, the platform's errors and feature rows as Feast serves them.

The contract of a tower file is ``towers/onnx/contract.py`` (inputs, output, ``metadata_props``) and
``towers/onnx/serving.py`` (the serving contract); :class:`TowerFileMetadata` is its one parser. This module adds:

- the sha256 recorded by the registry, verified by the reader on load (the file is hashed once);
- towers' errors translated once, here, into the platform's (a missing file is NotFoundError, an altered one
  IntegrityError, an unreadable or old-format one ConfigError, bad rows InputError);
- feature rows as the feature store serves them: an Arrow table (the item corpus) or a mapping column -> list of
  values (online features), read as the contract's types (string, list<string>, float64) before the towers'
  conversion to tensors (``towers.onnx.table_to_onnx_inputs``), so serving and export cannot drift.

onnxruntime is imported by the reader when a file is opened. A small but real tower of this contract, for tests and
benchmarks, lives in ``tests/reference_tower.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from towers.errors import ArtifactDigestError, TowersError
from tower_platform.errors import ConfigError, InputError, IntegrityError, TowerError, map_towers_error

if TYPE_CHECKING:  # pragma: no cover
    from towers.onnx import ServingContract, TowerFileMetadata, TowerInput

_ARROW_TYPES = {"categorical": pa.string(), "multi_categorical": pa.list_(pa.string()), "numeric": pa.float64()}


@dataclass(frozen=True)
class TowerMetadata:
    """What the platform reads of a tower file: :class:`TowerFileMetadata` with the version as a number."""

    model_name: str
    model_version: int
    dimension: int
    feature_service: str | None  # a label of the services used (``query+item``); the service to call: ``serving``
    temperature: float | None
    inputs: tuple[TowerInput, ...]
    serving: ServingContract
    schema: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, info: TowerFileMetadata, *, path: Path) -> TowerMetadata:
        version = str(info.model_version)
        if not version.isdigit() or int(version) < 1:
            raise ConfigError(
                f"ONNX tower {path} names model version {version!r}, not a number >= 1; export the model again."
            )
        return cls(
            model_name=info.model_name,
            model_version=int(version),
            dimension=info.dimension,
            feature_service=info.feature_service,
            temperature=info.temperature,
            inputs=info.inputs,
            serving=info.serving,
            schema=dict(info.schema),
        )

    @property
    def item_id_column(self) -> str:
        return str(self.schema.get("item_id") or "item_id")

    @property
    def item_category_column(self) -> str | None:
        value = self.schema.get("item_category")
        return str(value) if value else None


def platform_error(exc: TowersError, path: Path) -> TowerError:
    """The platform's error for one of towers' errors about the tower file at ``path``."""
    if isinstance(exc, ArtifactDigestError):
        return IntegrityError(
            f"ONNX tower {path} has sha256 {exc.actual[:12]}… but the registry recorded {exc.expected[:12]}…; "
            "the file was changed after registration: restore it or register a new version."
        )
    return map_towers_error(exc) or TowerError(str(exc))


@contextmanager
def translated(path: Path) -> Iterator[None]:
    """towers' errors about the file at ``path`` -> the platform's (:func:`platform_error`), once."""
    try:
        yield
    except TowersError as exc:
        raise platform_error(exc, path) from exc


class OnnxTower:
    """One tower file run by onnxruntime on CPU: ``embed(rows) -> [N, D]`` float32, unit-norm rows."""

    def __init__(self, path: str | Path, *, expected_sha256: str | None = None, threads: int | None = None) -> None:
        from towers.onnx.reader import load_onnx_tower

        self.path = Path(path)
        with translated(self.path):
            self._tower = load_onnx_tower(
                self.path, sha256=expected_sha256, threads=threads or min(4, os.cpu_count() or 1)
            )
        self.metadata = TowerMetadata.of(self._tower.info, path=self.path)
        self._specs = self._tower.info.specs()

    @property
    def dimension(self) -> int:
        return self.metadata.dimension

    @property
    def session(self) -> Any:
        """The onnxruntime ``InferenceSession`` (benchmarks time it alone)."""
        return self._tower.session

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.metadata.inputs)

    def feeds(self, rows: Any) -> dict[str, np.ndarray]:
        """The input dict for onnxruntime from an Arrow table or a mapping column -> values (one list per column).

        Plain Python values (an online read) take ``towers.onnx.values_to_onnx_inputs``; anything else is read as an
        Arrow table of the contract's types and converted by ``towers.onnx.table_to_onnx_inputs`` (same tensors)."""
        from towers.onnx.contract import table_to_onnx_inputs, values_to_onnx_inputs

        if isinstance(rows, Mapping):  # an online read: plain values, converted without Arrow when they are plain
            fast = values_to_onnx_inputs(rows, self._specs)
            if fast is not None:
                return fast
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
        with translated(self.path):
            try:
                return table_to_onnx_inputs(pa.table(columns), self._specs)
            except pa.ArrowInvalid as exc:
                raise InputError(f"feature rows for ONNX tower {self.path.name} cannot be read ({exc}).") from exc

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """One onnxruntime call on checked inputs: feeds -> [B, D] float32."""
        try:
            out = self._tower.run(dict(feeds))
        except TowersError as exc:
            raise platform_error(exc, self.path) from exc
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own failure types
            raise InputError(f"ONNX tower {self.path} failed on its inputs ({exc}); check the feature values.") from exc
        return np.asarray(out, dtype=np.float32)

    def embed(self, rows: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Embeddings of every row, computed in batches: [N, D] float32."""
        table = _as_table(rows, self.metadata.inputs)
        parts = [self.run(self.feeds(table.slice(start, batch_size))) for start in range(0, table.num_rows, batch_size)]
        if not parts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate(parts, axis=0)  # [N, D]


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
