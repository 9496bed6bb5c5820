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
    action: str  # register | collection | index | alignment | promote | rollback | reconcile | retire
    from_status: str | None
    to_status: str | None
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str | None
    details: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True)
class PromotionIntent:
    """A move of a model's production alias, recorded before the move (see ``registry.intents``).

    ``action`` is promote, rollback or realign (reconcile moving the alias back to the registry's production);
    ``from_collection`` is where the alias pointed when it began (None: no alias), ``to_collection`` where it is to
    point (None: removed). ``state``: pending until resolved as completed or aborted.
    """

    id: int
    model: str
    action: str
    from_version: int | None
    to_version: int | None
    from_collection: str | None
    to_collection: str | None
    actor: str
    reason: str | None
    details: dict[str, Any]
    state: str
    started_at: datetime
    resolved_at: datetime | None = None
    resolution: str | None = None
    resolved_by: str | None = None
    audit_event_id: int | None = None

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    def describe(self) -> str:
        """e.g. ``intent #4 (promote v1 -> v2 by alice at 2027-01-15 10:00:00 UTC)``."""
        source = f"v{self.from_version}" if self.from_version is not None else "none"
        target = f"v{self.to_version}" if self.to_version is not None else "none"
        at = self.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"intent #{self.id} ({self.action} {source} -> {target} by {self.actor} at {at})"


ALIGNMENT_FIGURES: tuple[str, ...] = (
    "item_count",
    "interaction_share",
    "alignment_distance",
    "relative_alignment",
    "mean_norm",
    "centroid_norm",
    "n_queries",
    "recall",
    "ndcg",
    "coverage",
)
"""The figures of one alignment segment, in the order tables show them (each has a delta against production)."""


@dataclass(frozen=True)
class AlignmentSegment:
    """The figures of one category (``kind`` = "category"), popularity bucket ("popularity") or the pooled small
    categories ("pooled", segment "small categories").

    alignment_distance = ||C(S_major) - C(S)||_F^2 between the covariance of the segment's item vectors and that of
    the major category (the one with the most items); relative_alignment = alignment_distance /
    (||C(S_major)||_F^2 + ||C(S)||_F^2), in [0, 1] (1.0: collapsed to one point, or spread orthogonally to the
    major category; see tower_platform.monitor.covariance). recall / ndcg are None when no test query targets the
    segment. ``deltas`` maps each figure to this version's value minus the compared version's (None where either
    side has none). ``pooled``: a category below the minimum items or test queries, judged inside the pooled
    segment rather than on its own (its own figures are still recorded).
    """

    kind: str
    segment: str
    item_count: int
    interaction_share: float
    alignment_distance: float
    relative_alignment: float | None
    mean_norm: float  # mean L2 norm of the segment's vectors (1.0 for a healthy collection)
    centroid_norm: float  # norm of the mean vector: 1.0 = every vector the same direction
    n_queries: int
    recall: float | None
    ndcg: float | None
    coverage: float  # share of the segment's items in anyone's top-K over the test queries
    deltas: dict[str, float | None] = field(default_factory=dict)
    pooled: bool = False

    def figure(self, name: str) -> float | int | None:
        return getattr(self, name)


@dataclass(frozen=True)
class AlignmentReport:
    """One alignment report of a model version, as the registry keeps it (``run`` counts from 1 per version)."""

    model: str
    version: int
    run: int
    k: int
    against_version: int | None
    collection: str
    major_category: str | None
    n_items: int
    n_queries: int
    n_skipped: int
    thresholds: dict[str, Any]
    breaches: tuple[dict[str, Any], ...]
    segments: tuple[AlignmentSegment, ...]
    created_at: datetime | None = None
    created_by: str = "system"
    id: int | None = None

    def by_kind(self, kind: str) -> tuple[AlignmentSegment, ...]:
        return tuple(s for s in self.segments if s.kind == kind)
