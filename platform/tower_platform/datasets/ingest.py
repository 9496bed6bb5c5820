"""Ingestion: raw dataset files -> Feast source tables and schema.json under ``$TOWER_HOME/sources``, atomically.

Everything is built in memory and written to a temporary folder next to ``sources/``; only a complete set of files
is renamed into place, so a failed ingest leaves the previous sources (or nothing) behind.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tower_platform._feature_repo import tower_layout as layout
from tower_platform.datasets.config import DatasetConfig
from tower_platform.datasets.registry import get_adapter
from tower_platform.datasets.source_tables import (
    build_interactions,
    build_item_profile,
    build_item_stats,
    build_user_profile,
    check_interactions,
    fingerprint_files,
    profile_stamp,
)
from tower_platform.datasets.user_history import build_user_history
from tower_platform.errors import InputError, UsageError


@dataclass(frozen=True)
class IngestReport:
    dataset: str
    model: str
    source: Path
    sources_dir: Path
    source_fingerprint: str
    rows: dict[str, int]
    sources_start: datetime
    first_event: datetime
    last_event: datetime
    views: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["views"] = list(self.views)
        return data


def resolve_source(config: DatasetConfig, source: Path | None) -> Path:
    chosen = Path(source) if source is not None else config.source
    if chosen is None:
        raise UsageError(
            f"Dataset config {config.path} has no source for '{config.name}'; pass the dataset folder with --source PATH."
        )
    chosen = chosen.expanduser().resolve()
    if not chosen.exists():
        raise InputError(f"Dataset source {chosen} does not exist; pass the dataset folder with --source PATH.")
    return chosen


def ingest(config: DatasetConfig, *, home_dir: Path, source: Path | None = None) -> IngestReport:
    """Read the dataset with its adapter and write the Feast source tables; returns what was written."""
    home_dir = Path(home_dir).resolve()
    adapter = get_adapter(config.adapter, config_path=config.path)
    source_dir = resolve_source(config, source)
    raw = adapter.read(source_dir)
    check_interactions(raw)

    interactions = build_interactions(raw, weight=config.weight, max_rating=adapter.max_rating)
    stamp = profile_stamp(interactions)
    item_profile = build_item_profile(raw, interactions, stamp=stamp)
    tables: dict[str, pa.Table] = {
        layout.INTERACTIONS: interactions,
        layout.USER_HISTORY: build_user_history(
            interactions,
            item_profile,
            recent_items=config.features.recent_items,
            top_genres=config.features.top_genres,
        ),
        layout.ITEM_PROFILE: item_profile,
        layout.ITEM_STATS: build_item_stats(
            interactions, item_profile.column("item_id").combine_chunks(), stamp=stamp
        ),
    }
    view_fields = {view: dict(fields) for view, fields in layout.FIXED_VIEW_FIELDS.items()}
    user_profile = build_user_profile(raw, stamp=stamp)
    if user_profile is not None:
        tables[layout.USER_PROFILE], view_fields[layout.USER_PROFILE] = user_profile

    first = pc.min(interactions.column("event_timestamp")).as_py()
    last = pc.max(interactions.column("event_timestamp")).as_py()
    sources_start = datetime.fromtimestamp(stamp / 1_000_000, tz=timezone.utc)
    fingerprint = fingerprint_files(raw.files)
    schema = {
        "dataset": config.name,
        "adapter": config.adapter,
        "model": config.model,
        "source": str(source_dir),
        "source_fingerprint": fingerprint,
        "views": {
            view: {"fields": view_fields[view], "ttl_seconds": config.features.ttl_seconds(view)}
            for view in layout.VIEW_ENTITY
            if view in view_fields
        },
        "list_lengths": {
            layout.full_name(layout.USER_HISTORY, layout.RECENT_ITEMS): config.features.recent_items,
            layout.full_name(layout.USER_HISTORY, layout.TOP_GENRES): config.features.top_genres,
            layout.full_name(layout.ITEM_PROFILE, "genres"): config.features.item_genres,
        },
        "kind_overrides": dict(config.features.kinds),
        "time_range": {"sources_start": sources_start.isoformat(), "first_event": first.isoformat(), "last_event": last.isoformat()},
        "rows": {name: table.num_rows for name, table in tables.items()},
    }
    _write_sources_atomically(home_dir, tables=tables, schema=schema)
    return IngestReport(
        dataset=config.name,
        model=config.model,
        source=source_dir,
        sources_dir=layout.sources_dir(home_dir),
        source_fingerprint=fingerprint,
        rows=schema["rows"],
        sources_start=sources_start,
        first_event=first,
        last_event=last,
        views=tuple(schema["views"]),
    )


def _write_sources_atomically(home_dir: Path, *, tables: dict[str, pa.Table], schema: dict[str, Any]) -> None:
    target = layout.sources_dir(home_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        for name, table in tables.items():
            pq.write_table(table, staging / f"{name}.parquet")
        (staging / layout.SCHEMA_FILE).write_text(json.dumps(schema, indent=2, sort_keys=True), encoding="utf-8")
        if target.exists():
            os.replace(target, retired)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if retired.exists() and not target.exists():
            os.replace(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)
