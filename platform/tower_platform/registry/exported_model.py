"""An exported model folder (``query.onnx``, ``item.onnx``, ``spec.json``) read into what registration needs.

``spec.json`` (written by the training export next to the towers; format_version 1)::

    {
      "format_version": 1,
      "model": "movies",                       # must match --model and the towers' model_name
      "version": 3,                            # optional: register exactly this version number
      "feature_service": "movies_two_tower",   # must match the towers' feature_service metadata
      "features": ["user_profile__age", ...],  # or a FeatureSchema.to_dict() mapping; default: the towers' schema
      "training_config": {...},                # the config that rebuilds the model
      "fingerprint": "9f2c...",                # training-set fingerprint (audited Arrow table)
      "time_window": {"start": "2018-01-01T00:00:00+00:00", "end": "2018-09-01T00:00:00+00:00"},
      "estimator_path": "frequency_estimator.npz",  # optional; relative to the folder or absolute; must exist
      "metrics": {"recall@100": 0.31, ...},
      "sha256": {"query.onnx": "...", "item.onnx": "..."}  # optional: checked against the files
    }

The towers' ``metadata_props`` (``model_name``, ``model_version``, ``feature_service``, ``dimension``, ``schema``)
are cross-checked with the spec: a disagreement is an :class:`InputError` naming the file and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tower_platform.errors import InputError, IntegrityError
from tower_platform.naming import name_problem
from tower_platform.registry.artifact import file_sha256
from tower_platform.registry.entities import ARTIFACT_NAMES

SPEC_FILE = "spec.json"
TOWER_FILES = ("query.onnx", "item.onnx")
REQUIRED_SPEC_FIELDS = ("feature_service", "training_config", "fingerprint", "metrics")


@dataclass(frozen=True)
class ExportedModel:
    folder: Path
    model: str
    version: int | None
    artifacts: dict[str, tuple[str, str]]  # name -> (absolute path, sha256)
    feature_service: str
    features: Any
    training_config: dict[str, Any]
    fingerprint: str
    time_window: tuple[datetime | None, datetime | None] | None
    estimator_path: str | None
    metrics: dict[str, Any]
    dimension: int | None


def read_exported_model(folder: str | Path, *, model: str | None) -> ExportedModel:
    """Read and cross-check an export folder; ``model`` (``--model``) defaults to the spec's model name."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"Artifact folder {folder} does not exist; pass the folder the training export wrote.")
    missing = [name for name in ARTIFACT_NAMES if not (folder / name).is_file()]
    if missing:
        raise InputError(f"Artifact folder {folder} lacks {', '.join(missing)}; export the model again into it.")
    spec = _read_spec(folder / SPEC_FILE)
    towers = {name: _onnx_metadata(folder / name) for name in TOWER_FILES}

    name = model or spec.get("model") or towers["query.onnx"].get("model_name")
    if not name:
        raise InputError(f"{folder / SPEC_FILE} names no model; add \"model\" to it or pass --model NAME.")
    problem = name_problem(name)
    if problem is not None:
        raise InputError(f"{folder / SPEC_FILE} names a model whose name {problem}; export it again under a valid name.")
    _agree(folder / SPEC_FILE, "model", spec.get("model"), name, source="--model")
    for tower, meta in towers.items():
        _agree(folder / tower, "model_name", meta.get("model_name"), name, source="--model")
        _agree(folder / tower, "feature_service", meta.get("feature_service"), spec["feature_service"], source=SPEC_FILE)
    dims = {tower: meta.get("dimension") for tower, meta in towers.items()}
    if dims["query.onnx"] and dims["item.onnx"] and dims["query.onnx"] != dims["item.onnx"]:
        raise InputError(
            f"In {folder}, query.onnx has dimension {dims['query.onnx']} but item.onnx {dims['item.onnx']}; "
            "export both towers of one model together."
        )

    artifacts = {n: (str(folder / n), file_sha256(folder / n)) for n in ARTIFACT_NAMES}
    for tower_name, expected in dict(spec.get("sha256") or {}).items():
        if tower_name in artifacts and artifacts[tower_name][1] != str(expected).lower():
            raise IntegrityError(
                f"Artifact {tower_name} in {folder} has sha256 {artifacts[tower_name][1][:12]}…, not the "
                f"{str(expected)[:12]}… its export recorded in {SPEC_FILE}; export the model again."
            )

    features = spec.get("features")
    if features is None and towers["query.onnx"].get("schema"):
        features = json.loads(towers["query.onnx"]["schema"])
    if features is None:
        raise InputError(f"{folder / SPEC_FILE} has no \"features\" and query.onnx no schema; export the model again.")
    return ExportedModel(
        folder=folder,
        model=name,
        version=_version(spec, towers, folder),
        artifacts=artifacts,
        feature_service=str(spec["feature_service"]),
        features=features,
        training_config=dict(spec["training_config"]),
        fingerprint=str(spec["fingerprint"]),
        time_window=_time_window(spec.get("time_window"), folder / SPEC_FILE),
        estimator_path=_estimator_path(spec.get("estimator_path"), folder),
        metrics=dict(spec["metrics"]),
        dimension=int(dims["query.onnx"]) if dims["query.onnx"] else None,
    )


def _read_spec(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not readable JSON ({exc}); export the model again.") from exc
    if not isinstance(spec, dict):
        raise InputError(f"{path} must hold a JSON object; export the model again.")
    missing = [f for f in REQUIRED_SPEC_FIELDS if f not in spec]
    if missing:
        raise InputError(f"{path} lacks the fields {missing}; export the model again with a current release.")
    return spec


def _onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and others; all mean "not a model file"
        raise InputError(f"{path} is not a readable ONNX model ({type(exc).__name__}); export the model again.") from exc
    return {p.key: p.value for p in proto.metadata_props}


def _agree(path: Path, field: str, found: Any, expected: Any, *, source: str) -> None:
    if found not in (None, "") and str(found) != str(expected):
        raise InputError(
            f"{path} has {field} {found!r} but {source} says {expected!r}; register the folder under its own model "
            "name or export it again."
        )


def _version(spec: dict[str, Any], towers: dict[str, dict[str, str]], folder: Path) -> int | None:
    candidates = {str(v) for v in [spec.get("version"), *(m.get("model_version") for m in towers.values())] if v}
    numbers = {int(v) for v in candidates if v.isdigit() and int(v) >= 1}
    if len(numbers) > 1:
        raise InputError(
            f"The files in {folder} name different versions {sorted(numbers)}; export both towers and the spec together."
        )
    return numbers.pop() if numbers else None


def _time_window(raw: Any, path: Path) -> tuple[datetime | None, datetime | None] | None:
    if raw is None:
        return None
    start, end = (raw.get("start"), raw.get("end")) if isinstance(raw, dict) else tuple(raw)
    return _timestamp(start, path), _timestamp(end, path)


def _timestamp(value: Any, path: Path) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{path}: time_window value {value!r} is not an ISO 8601 timestamp; fix the spec.") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _estimator_path(raw: Any, folder: Path) -> str | None:
    if raw in (None, ""):
        return None
    path = Path(str(raw)).expanduser()
    path = path if path.is_absolute() else folder / path
    if not path.exists():
        raise InputError(f"The frequency-estimator state {path} named in {folder / SPEC_FILE} does not exist; export again.")
    return str(path.resolve())
