"""The feature steps as plain functions, for ``towerctl`` commands and for pipelines that chain them.

    ingest(config, home_dir=...)                raw files -> $TOWER_HOME/sources
    apply_and_materialize(repo_dir=..., ...)    feast apply + materialize [start, end]
    open_feature_store(repo_dir=..., ...)       the FeastFeatureStore that training sets and corpora read from
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tower_platform.datasets.ingest import IngestReport, ingest
from tower_platform.features.store import ApplyReport, FeastFeatureStore
from tower_platform.timestamp import as_utc as _utc

__all__ = ["IngestReport", "MaterializeReport", "apply_and_materialize", "ingest", "materialize", "open_feature_store"]


@dataclass(frozen=True)
class MaterializeReport:
    start: datetime
    end: datetime
    views: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "views": list(self.views)}


def open_feature_store(*, repo_dir: Path, home_dir: Path) -> FeastFeatureStore:
    return FeastFeatureStore(repo_dir, home_dir=home_dir)


def materialize(
    store: FeastFeatureStore, *, start: datetime | None = None, end: datetime | None = None
) -> MaterializeReport:
    """Materialize [start, end] (defaults: the earliest source row .. now, UTC)."""
    data_start, _ = store.data_time_range()
    start = _utc(start) if start is not None else data_start
    end = _utc(end) if end is not None else datetime.now(timezone.utc)
    store.materialize(start, end)
    return MaterializeReport(start=start, end=end, views=tuple(store.source_schema()["views"]))


def apply_and_materialize(
    *, repo_dir: Path, home_dir: Path, start: datetime | None = None, end: datetime | None = None
) -> tuple[FeastFeatureStore, ApplyReport, MaterializeReport]:
    """Apply the definitions for the ingested sources and load the online store; safe to re-run."""
    store = open_feature_store(repo_dir=repo_dir, home_dir=home_dir)
    applied = store.apply()
    return store, applied, materialize(store, start=start, end=end)
