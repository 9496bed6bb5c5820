"""What the registry hands to callers: frozen dataclasses, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ARTIFACT_NAMES: tuple[str, ...] = ("query.onnx", "item.onnx", "spec.json")
"""The files of one model version, by the names the export writes them under."""


@dataclass(frozen=True)
class Artifact:
    name: str  # one of ARTIFACT_NAMES
    path: str  # absolute path
    sha256: str  # lowercase hex


@dataclass(frozen=True)
class Collection:
    """The Qdrant collection that holds a version's item vectors."""

    name: str
    point_count: int
    dimension: int
    distance: str
    created_at: datetime
    verified_at: datetime | None
    deleted_at: datetime | None

    @property
    def verified(self) -> bool:
        return self.verified_at is not None and self.deleted_at is None


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    status: str  # registered | indexed | production | rolled_back | retired
    artifacts: tuple[Artifact, ...]
    feature_service: str
    features: Any  # JSON: a list of feature names or a feature-schema mapping, as registered
    training_config: dict[str, Any]
    fingerprint: str
    window_start: datetime | None
    window_end: datetime | None
    estimator_path: str | None
    metrics: dict[str, Any]
    created_at: datetime
    created_by: str
    collection: Collection | None = None

    def artifact(self, name: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        raise KeyError(name)


@dataclass(frozen=True)
class Model:
    name: str
    description: str | None
    created_at: datetime
    production_version: int | None = None
    latest_version: int | None = None
    version_count: int = 0


@dataclass(frozen=True)
class AuditEvent:
    id: int
    model: str
    version: int | None
    action: str  # register | collection | index | promote | rollback | retire
    from_status: str | None
    to_status: str | None
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str | None
    details: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
