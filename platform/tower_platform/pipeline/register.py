"""Register an export folder as a model version (or plan it: a dry run that makes every check and writes nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.entities import ModelVersion
    from tower_platform.registry.store import SqlRegistryStore


def register_export(
    registry: SqlRegistryStore, folder: Path, *, model: str | None, actor: str, reason: str | None = None
) -> ModelVersion:
    """Register an export folder (query.onnx, item.onnx, spec.json) as a version after checking its sha256s."""
    model_name, fields = _export_fields(folder, model=model, actor=actor)
    return registry.register_version(model_name, reason=reason, **fields)


def plan_export_registration(
    registry: SqlRegistryStore | None, folder: Path, *, model: str | None, actor: str, reason: str | None = None
) -> ModelVersion:
    """The version ``register_export`` would record, after the same checks (the version number included), written
    nowhere; ``registry`` None: the registry does not exist yet (the real run would create it, then take version 1)."""
    from tower_platform.registry.store import plan_first_registration

    model_name, fields = _export_fields(folder, model=model, actor=actor)
    if registry is None:
        return plan_first_registration(model_name, **fields)
    return registry.register_version(model_name, reason=reason, dry_run=True, **fields)


def _export_fields(folder: Path, *, model: str | None, actor: str) -> tuple[str, dict[str, Any]]:
    from tower_platform.registry.exported_model import read_exported_model
    from tower_platform.naming import check_model_name

    exported = read_exported_model(folder, model=model)
    check_model_name(exported.model)
    return exported.model, dict(
        artifacts=exported.artifacts,
        feature_service=exported.feature_service,
        features=exported.features,
        training_config=exported.training_config,
        fingerprint=exported.fingerprint,
        time_window=exported.time_window,
        estimator_path=exported.estimator_path,
        metrics=exported.metrics,
        actor=actor,
        version=exported.version,
    )
