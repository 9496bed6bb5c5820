"""The columns of a model version's registration, checked before any database is touched: the name, each
artifact's sha256, JSON-only fields, artifact paths stored relative to ``$TOWER_HOME`` when it is given."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from tower_platform.errors import UsageError
from tower_platform.naming import check_model_name
from tower_platform.paths import stored_path
from tower_platform.registry.artifact import verify_artifacts
from tower_platform.registry.entities import ARTIFACT_NAMES, Artifact
from tower_platform.registry.schema import utc_now
from tower_platform.timestamp import as_utc


def registration_fields(
    model: str,
    *,
    artifacts: Mapping[str, tuple[str, str]],
    feature_service: str,
    features: Any,
    training_config: Mapping[str, Any],
    fingerprint: str,
    time_window: tuple[datetime | None, datetime | None] | None,
    estimator_path: str | None,
    metrics: Mapping[str, Any],
    actor: str,
    version: int | None,
    home_dir: Path | None = None,
) -> dict[str, Any]:
    """The model_versions columns of a registration, after every check that needs no database: the name, each
    artifact's sha256, JSON-only fields. Artifact paths under ``home_dir`` are stored relative to it."""
    check_model_name(model)
    recorded = _artifacts(artifacts, model=model)
    verify_artifacts(recorded, model=model, version=version)
    start, end = time_window if time_window is not None else (None, None)
    by_name = {a.name: a for a in recorded}
    fields = dict(
        query_onnx_path=stored_path(by_name["query.onnx"].path, home_dir),
        query_onnx_sha256=by_name["query.onnx"].sha256,
        item_onnx_path=stored_path(by_name["item.onnx"].path, home_dir),
        item_onnx_sha256=by_name["item.onnx"].sha256,
        spec_path=stored_path(by_name["spec.json"].path, home_dir),
        spec_sha256=by_name["spec.json"].sha256,
        feature_service=str(feature_service),
        features=_json_value(features),
        training_config=_json_value(dict(training_config)),
        fingerprint=str(fingerprint),
        window_start=as_utc(start),
        window_end=as_utc(end),
        estimator_path=None if estimator_path is None else stored_path(estimator_path, home_dir),
        metrics=_json_value(dict(metrics)),
        created_at=utc_now(),
        created_by=actor,
    )
    return fields


def _artifacts(artifacts: Mapping[str, tuple[str, str]], *, model: str) -> list[Artifact]:
    missing = [n for n in ARTIFACT_NAMES if n not in artifacts]
    unknown = sorted(set(artifacts) - set(ARTIFACT_NAMES))
    if missing or unknown:
        raise UsageError(
            f"Artifacts of model '{model}' must be exactly {list(ARTIFACT_NAMES)}; missing {missing}, unknown {unknown}."
        )
    recorded = []
    for name in ARTIFACT_NAMES:
        path, sha256 = artifacts[name]
        if not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha256)):
            raise UsageError(f"The sha256 of artifact {name} of model '{model}' is not 64 hex digits: {sha256!r}.")
        recorded.append(Artifact(name, str(Path(path).expanduser().resolve()), str(sha256).lower()))
    return recorded


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json_value(value: Any) -> Any:
    """A plain JSON value (lists, dicts, str, numbers); NaN and inf become null so PostgreSQL accepts them."""
    try:
        text = json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"A registry field holds a value that is not JSON ({exc}); pass plain data.") from exc
    return json.loads(text, parse_constant=lambda _constant: None)
