"""Self-contained ONNX towers: ``query.onnx`` and ``item.onnx`` take feature values exactly as the feature store
serves them and return L2-normalised float32 embeddings (the contract: ``towers/onnx/contract.py``).

A file is built by ``towers/onnx/graph.py``, then checked for parity (torch vs onnxruntime, max abs diff <= 1e-5) on
the caller's rows plus synthetic rows with unknown ids, missing values, empty and long lists
(``towers/onnx/parity.py``); ``ExportParityError`` is raised when it does not hold. Files are written to a temporary
name, then renamed; each file's sha256 is computed once, from the bytes written, and returned in ``ExportResult`` so
later steps verify it instead of hashing again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from towers.errors import ExportParityError, MissingColumnError
from towers.features.encoder import FeatureEncoders
from towers.onnx.contract import FORMAT_VERSION, OUTPUT_NAME, input_description
from towers.onnx.graph import export_core, with_string_inputs
from towers.onnx.parity import PARITY_TOLERANCE, parity_max_abs_diff, unusual_rows

if TYPE_CHECKING:
    import onnx

    from towers.features.schema import FeatureSpec
    from towers.nn.model import TwoTowerModel
    from towers.nn.tower import Tower


@dataclass(frozen=True)
class ExportResult:
    query_path: Path
    item_path: Path
    sha256s: dict[str, str]  # file name -> sha256 hex digest of the bytes written
    dimension: int
    max_abs_diff: float


def _set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _write_atomically(model: onnx.ModelProto, path: Path) -> str:
    data = model.SerializeToString()
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def export_tower(
    tower: Tower,
    *,
    specs: tuple[FeatureSpec, ...],
    encoders: FeatureEncoders,
    path: Path,
    metadata: dict[str, str],
    sample: pa.Table,
    tolerance: float = PARITY_TOLERANCE,
) -> tuple[str, float]:
    """Export one tower to ``path`` after the parity check; returns (sha256, max abs diff)."""
    import onnx

    missing = [s.name for s in specs if s.name not in sample.column_names]
    if missing:
        raise MissingColumnError(f"The parity sample lacks columns {missing}; pass rows that carry every input of the tower.")
    tower = tower.cpu().eval()
    model = with_string_inputs(export_core(tower, specs), specs, encoders)
    inputs = [input_description(s) for s in specs]
    _set_metadata(model, {**metadata, "inputs": json.dumps(inputs), "output": OUTPUT_NAME})
    onnx.checker.check_model(model)
    sample = sample.select([s.name for s in specs])
    diff = max(
        parity_max_abs_diff(tower, specs, encoders, model, sample),
        parity_max_abs_diff(tower, specs, encoders, model, unusual_rows(specs, encoders)),
    )
    if not diff <= tolerance:
        raise ExportParityError(
            f"ONNX tower {path.name} differs from the torch tower by {diff:.3g} (> {tolerance:g}); the file was not written"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write_atomically(model, path), diff


def export_two_towers(
    model: TwoTowerModel,
    encoders: FeatureEncoders,
    out_dir: Path,
    *,
    model_name: str,
    model_version: str,
    feature_service: str,
    temperature: float,
    query_sample: pa.Table,
    item_sample: pa.Table,
    extra_metadata: Mapping[str, str] | None = None,
) -> ExportResult:
    """``out_dir/query.onnx`` and ``out_dir/item.onnx`` with metadata and parity checks. ``extra_metadata`` is
    written into both files as well (e.g. the serving contract, ``ServingContract.to_metadata()``); it cannot
    replace the keys the contract defines."""
    was_training = model.training
    device = next(model.parameters()).device
    model.cpu().eval()
    dimension = int(model.config.towers.output_dim)
    common = {
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "model_version": str(model_version),
        "feature_service": feature_service,
        "dimension": str(dimension),
        "temperature": repr(float(temperature)),
        "schema": encoders.schema.to_json(),
    }
    common = {**{k: str(v) for k, v in (extra_metadata or {}).items()}, **common}
    paths = {"query": out_dir / "query.onnx", "item": out_dir / "item.onnx"}
    towers = {"query": model.query_tower, "item": model.item_tower}
    samples = {"query": query_sample, "item": item_sample}
    sha256s: dict[str, str] = {}
    worst = 0.0
    try:
        for side in ("query", "item"):
            digest, diff = export_tower(
                towers[side],
                specs=encoders.specs[side],
                encoders=encoders,
                path=paths[side],
                metadata={**common, "tower": side},
                sample=samples[side],
            )
            sha256s[paths[side].name] = digest
            worst = max(worst, diff)
    finally:
        model.to(device).train(was_training)
    return ExportResult(
        query_path=paths["query"], item_path=paths["item"], sha256s=sha256s, dimension=dimension, max_abs_diff=worst
    )
