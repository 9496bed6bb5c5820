"""Register an export folder as a model version."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.entities import ModelVersion
    from tower_platform.registry.store import SqlRegistryStore


def register_export(
    registry: SqlRegistryStore, folder: Path, *, model: str | None, actor: str, reason: str | None = None
) -> ModelVersion:
    """Register an export folder (query.onnx, item.onnx, spec.json) as a version after checking its sha256s."""
    from tower_platform.registry.exported_model import read_exported_model
    from tower_platform.naming import check_model_name

    exported = read_exported_model(folder, model=model)
    check_model_name(exported.model)
    return registry.register_version(
        exported.model,
        artifacts=exported.artifacts,
        feature_service=exported.feature_service,
        features=exported.features,
        training_config=exported.training_config,
        fingerprint=exported.fingerprint,
        time_window=exported.time_window,
        estimator_path=exported.estimator_path,
        metrics=exported.metrics,
        actor=actor,
        reason=reason,
        version=exported.version,
    )
