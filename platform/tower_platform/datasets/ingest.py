"""Ingestion: the dataset config's tables -> Feast source tables and schema.json under ``$TOWER_HOME/sources``.

Everything is built in memory and written to a temporary folder next to ``sources/``; only a complete set of files
is renamed into place, so a failed ingest (bad config, bad data) leaves the previous sources (or nothing) behind.

    interactions   user_id, item_id, event_timestamp, weight, declared values; sorted by (event_timestamp, user_id, item_id)
    user_history   derived query features (tower_platform.datasets.derived), when the config declares any
    user_profile   static user attributes, when the config declares users
    item_profile   static item attributes and the display column, stamped before the first event
    item_stats     derived item features, when the config declares any
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tower_platform.datasets import layout
from tower_platform.datasets.config import Attribute, DatasetConfig
from tower_platform.datasets.derived import MICROS_PER_DAY, build_item_stats, build_user_history
from tower_platform.datasets.tabular import TIMESTAMP_TYPE, RawDataset, read_dataset
from tower_platform.errors import InputError
from tower_platform.staging import staged_folder

_ATTRIBUTE_TYPES = {"categorical": "string", "multi_categorical": "list<string>", "numeric": "float64"}
_UNIT_SECONDS = {"seconds": 1.0, "hours": 3600.0, "days": 86400.0}


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
    missing_items: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["views"] = list(self.views)
        return data


def ingest(config: DatasetConfig, *, home_dir: Path, source: Path | None = None) -> IngestReport:
    """Read the dataset as its config says and write the Feast source tables; returns what was written."""
    home_dir = Path(home_dir).resolve()
    if config.feast is not None:
        return _ingest_existing_repository(config, home_dir=home_dir, source=source)
    base_dir = config.base_dir(source)
    if not base_dir.exists():
        raise InputError(f"Dataset source {base_dir} does not exist; fix the config's 'source' key or pass --source PATH.")
    raw = read_dataset(config, base_dir)
    interactions = sorted_interactions(raw.interactions)
    check_interactions(interactions, config, path=raw.paths.get("interactions"))
    stamp = profile_stamp(interactions)
    item_ids = raw.items.column(layout.ITEM_KEY).combine_chunks()  # every item (interaction items included)
    tables: dict[str, pa.Table] = {layout.INTERACTIONS: interactions, layout.ITEM_PROFILE: _stamped(raw.items, stamp=stamp)}
    views: dict[str, dict[str, str]] = {}
    ttl_seconds: dict[str, int] = {}
    assert config.items is not None
    views[layout.ITEM_PROFILE] = {name: _ATTRIBUTE_TYPES[a.kind] for name, a in config.items.attributes.items()}
    if raw.users is not None and config.users is not None and config.users.attributes:
        tables[layout.USER_PROFILE] = _stamped(raw.users, stamp=stamp)
        views[layout.USER_PROFILE] = {name: _ATTRIBUTE_TYPES[a.kind] for name, a in config.users.attributes.items()}
    derived = []
    if config.features.query:
        derived.append((layout.USER_HISTORY, config.features.query, build_user_history(interactions, raw.items, config.features.query)))
    if config.features.item:
        derived.append((layout.ITEM_STATS, config.features.item, build_item_stats(interactions, item_ids, config.features.item, stamp=stamp)))
    for base, features, table in derived:  # a feature with its own TTL gets its own view
        for name, feature in features.items():
            view = layout.ttl_view(base, feature.ttl_days)
            views.setdefault(view, {})[name] = _type_of(table.schema.field(name).type)
            if feature.ttl_days is not None:
                ttl_seconds[view] = int(round(feature.ttl_days * 86400))
        for view in [v for v in views if layout.view_entity(v) == layout.view_entity(base) and v.startswith(base)]:
            tables[view] = table.select([*table.column_names[:3], *views[view]])

    first = pc.min(interactions.column(layout.TIMESTAMP_FIELD)).as_py()
    last = pc.max(interactions.column(layout.TIMESTAMP_FIELD)).as_py()
    sources_start = datetime.fromtimestamp(stamp / 1_000_000, tz=timezone.utc)
    fingerprint = fingerprint_files(raw.files) if raw.files else fingerprint_tables(raw)
    schema = {
        "dataset": config.name,
        "adapter": config.adapter,
        "model": config.model,
        "source": str(base_dir),
        "source_fingerprint": fingerprint,
        "views": {
            view: {"fields": views[view], "ttl_seconds": ttl_seconds.get(view, config.features.ttl_seconds(view))}
            for view in sorted(views, key=_view_order)
            if views[view]
        },
        **feature_metadata(config),
        "time_range": {"sources_start": sources_start.isoformat(), "first_event": first.isoformat(), "last_event": last.isoformat()},
        "rows": {name: table.num_rows for name, table in tables.items()},
        "missing_items": raw.missing_items,
    }
    _write_sources_atomically(home_dir, tables=tables, schema=schema)
    return IngestReport(
        dataset=config.name,
        model=config.model,
        source=base_dir,
        sources_dir=layout.sources_dir(home_dir),
        source_fingerprint=fingerprint,
        rows=schema["rows"],
        sources_start=sources_start,
        first_event=first,
        last_event=last,
        views=tuple(schema["views"]),
        missing_items=raw.missing_items,
    )


def _ingest_existing_repository(config: DatasetConfig, *, home_dir: Path, source: Path | None) -> IngestReport:
    """Only the interactions (the entity rows) and schema.json naming the repository; its features stay where they are."""
    from tower_platform.datasets.feast_repository import external_metadata, read_interactions

    base_dir = Path(source).resolve() if source is not None else config.base_dir()
    metadata = external_metadata(config)  # checks the repository first
    table, path = read_interactions(config, base_dir)
    interactions = sorted_interactions(table)
    first = pc.min(interactions.column(layout.TIMESTAMP_FIELD)).as_py()
    last = pc.max(interactions.column(layout.TIMESTAMP_FIELD)).as_py()
    sources_start = datetime.fromtimestamp(profile_stamp(interactions) / 1_000_000, tz=timezone.utc)
    fingerprint = fingerprint_files((path,))
    schema = {
        "dataset": config.name,
        "adapter": "feast",
        "model": config.model,
        "source": str(base_dir),
        "source_fingerprint": fingerprint,
        **metadata,
        "time_range": {"sources_start": sources_start.isoformat(), "first_event": first.isoformat(), "last_event": last.isoformat()},
        "rows": {layout.INTERACTIONS: interactions.num_rows},
        "missing_items": 0,
    }
    _write_sources_atomically(home_dir, tables={layout.INTERACTIONS: interactions}, schema=schema)
    return IngestReport(
        dataset=config.name, model=config.model, source=base_dir, sources_dir=layout.sources_dir(home_dir),
        source_fingerprint=fingerprint, rows=schema["rows"], sources_start=sources_start, first_event=first,
        last_event=last, views=(),
    )


def feature_metadata(config: DatasetConfig) -> dict[str, Any]:
    """What the feature store needs beyond Feast types: list lengths, vocabularies, category, elapsed-time features."""
    assert config.items is not None
    attributes: dict[str, tuple[str, Attribute]] = {
        **{name: (layout.ITEM_PROFILE, a) for name, a in config.items.attributes.items()},
        **({name: (layout.USER_PROFILE, a) for name, a in config.users.attributes.items()} if config.users else {}),
    }
    lengths: dict[str, int] = {}
    vocab: dict[str, str] = {}
    for name, (view, attribute) in attributes.items():
        full = layout.full_name(view, name)
        if attribute.kind == "multi_categorical":
            lengths[full] = int(attribute.length or 1)
        if attribute.kind != "numeric" and view == layout.ITEM_PROFILE:
            vocab[full] = attribute.vocabulary or f"{view}.{name}"
    elapsed: dict[str, float] = {}
    recent = None
    item_vocab = {name: attribute.vocabulary or f"{layout.ITEM_PROFILE}.{name}" for name, attribute in config.items.attributes.items()}
    for name, feature in config.features.query.items():
        full = layout.full_name(layout.ttl_view(layout.USER_HISTORY, feature.ttl_days), name)
        if feature.type == "recent_items":
            lengths[full], vocab[full], recent = int(feature.length or 1), layout.ITEM_ID_VOCAB, full
        elif feature.type == "top_values":
            lengths[full], vocab[full] = int(feature.k or 1), item_vocab[str(feature.attribute)]
        elif feature.type in ("days_since_first", "time_since_previous"):
            elapsed[full] = _UNIT_SECONDS[feature.unit]
    for name, feature in config.features.item.items():
        if feature.type == "days_since_first":
            elapsed[layout.full_name(layout.ttl_view(layout.ITEM_STATS, feature.ttl_days), name)] = _UNIT_SECONDS[feature.unit]
    category = config.items.category
    return {
        "list_lengths": lengths,
        "kind_overrides": dict(config.features.kinds),
        "vocab_groups": vocab,
        "item_category": layout.full_name(layout.ITEM_PROFILE, category) if category else None,
        "recent_items": recent,
        "elapsed": elapsed,
        "display": bool(config.items.display),
    }


def sorted_interactions(table: pa.Table) -> pa.Table:
    table = table.set_column(table.schema.get_field_index(layout.TIMESTAMP_FIELD), layout.TIMESTAMP_FIELD,
                             table.column(layout.TIMESTAMP_FIELD).cast(TIMESTAMP_TYPE))
    keys = [(layout.TIMESTAMP_FIELD, "ascending"), (layout.USER_KEY, "ascending"), (layout.ITEM_KEY, "ascending")]
    return table.take(pc.sort_indices(table, keys))


def check_interactions(table: pa.Table, config: DatasetConfig, *, path: Path | None = None) -> None:
    """Refuse repeated interactions (same user, item and timestamp), naming the config's columns."""
    assert config.interactions is not None
    keys = [layout.USER_KEY, layout.ITEM_KEY, layout.TIMESTAMP_FIELD]
    counts = table.group_by(keys).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts.column("count_all"), 1))
    if repeated.num_rows:
        first = repeated.slice(0, 1).to_pylist()[0]
        spec = config.interactions
        raise InputError(
            f"Dataset config {config.path}: key 'interactions', columns '{spec.user_id}', '{spec.item_id}', "
            f"'{spec.timestamp.column}'{f' of {path}' if path else ''}: {repeated.num_rows} interactions are repeated (e.g. user {first['user_id']} and item "
            f"{first['item_id']} at {first['event_timestamp'].isoformat()}); remove or aggregate the repeated rows."
        )


def profile_stamp(interactions: pa.Table) -> int:
    """Timestamp (µs) of static rows: UTC midnight one day before the first event."""
    first = int(pc.min(interactions.column(layout.TIMESTAMP_FIELD)).cast(pa.int64()).as_py())
    return (first // MICROS_PER_DAY - 1) * MICROS_PER_DAY


def fingerprint_files(files: tuple[Path, ...]) -> str:
    """sha256 over the raw files' names and bytes, in the order given."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode("utf-8") + b"\0")
        if path.is_dir():
            continue
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def fingerprint_tables(raw: RawDataset) -> str:
    """sha256 over the canonical tables (for readers that read no files)."""
    digest = hashlib.sha256()
    for table in (raw.interactions, raw.items, raw.users):
        if table is None:
            continue
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()


def _view_order(view: str) -> tuple[int, str]:
    bases = list(layout.VIEW_ENTITY)
    return next(i for i, base in enumerate(bases) if view == base or view.startswith(f"{base}_ttl")), view


def _type_of(kind: pa.DataType) -> str:
    if pa.types.is_list(kind):
        return "list<string>"
    return "float64" if pa.types.is_floating(kind) else "int64" if pa.types.is_integer(kind) else "string"


def _stamped(table: pa.Table, *, stamp: int) -> pa.Table:
    stamps = pa.array(np.full(table.num_rows, stamp, np.int64), pa.int64()).cast(TIMESTAMP_TYPE)
    key = table.column_names[0]
    rest = table.column_names[1:]
    table = table.append_column(layout.TIMESTAMP_FIELD, stamps).append_column(layout.SNAPSHOT_FIELD, stamps)
    return table.select([key, layout.TIMESTAMP_FIELD, layout.SNAPSHOT_FIELD, *rest])


def _write_sources_atomically(home_dir: Path, *, tables: dict[str, pa.Table], schema: dict[str, Any]) -> None:
    """Write every table and schema.json into a staging folder, then rename it over ``sources/`` (tower_platform.staging:
    the leftovers of killed ingests are removed first, those of a live one never)."""
    target = layout.sources_dir(home_dir)
    with staged_folder(target.parent, target.name, replace=True) as staging:
        for name, table in tables.items():
            pq.write_table(table, staging / f"{name}.parquet")
        (staging / layout.SCHEMA_FILE).write_text(json.dumps(schema, indent=2, sort_keys=True), encoding="utf-8")
