"""Builds the Feast objects of the repository (entities, file sources, feature views, feature services).

The views are generic: their columns, TTLs and the optional views come from ``$TOWER_HOME/sources/schema.json``,
which the dataset ingestion writes. ``tower_platform.features.FeastFeatureStore.apply`` calls
:func:`build_definitions` directly; the feature repository's ``repo.py`` calls it at import time so that the plain ``feast apply`` CLI sees the
same objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, Int64, String, UnixTimestamp

from tower_platform.datasets import layout

_FEAST_TYPES = {"string": String, "int64": Int64, "float64": Float64, "list<string>": Array(String)}


@dataclass(frozen=True)
class TowerDefinitions:
    entities: tuple[Entity, ...]
    views: dict[str, FeatureView]
    services: dict[str, FeatureService]

    @property
    def objects(self) -> list[Any]:
        return [*self.entities, *self.views.values(), *self.services.values()]


def read_source_schema(home_dir: Path) -> dict[str, Any]:
    """The sources' schema.json, or an empty layout (no views) when nothing was ingested yet."""
    path = layout.schema_path(home_dir)
    if not path.is_file():
        return {"views": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def build_definitions(home_dir: Path) -> TowerDefinitions:
    home_dir = Path(home_dir).resolve()
    schema = read_source_schema(home_dir)
    entities = {
        name: Entity(name=name, join_keys=[key], value_type=ValueType.STRING)
        for name, key in layout.ENTITY_KEY.items()
    }
    views: dict[str, FeatureView] = {}
    for view_name, view_schema in schema.get("views", {}).items():
        entity = entities[layout.view_entity(view_name)]
        source = FileSource(
            name=f"{view_name}_source",
            path=str(layout.source_path(home_dir, view_name)),
            timestamp_field=layout.TIMESTAMP_FIELD,
        )
        fields = [Field(name=layout.SNAPSHOT_FIELD, dtype=UnixTimestamp)]
        fields += [Field(name=name, dtype=_FEAST_TYPES[kind]) for name, kind in view_schema["fields"].items()]
        views[view_name] = FeatureView(
            name=view_name,
            entities=[entity],
            ttl=timedelta(seconds=int(view_schema.get("ttl_seconds", 0))),  # 0 = rows never expire
            schema=fields,
            source=source,
            online=True,
        )
    services: dict[str, FeatureService] = {}
    for service_name, view_names in ((layout.QUERY_SERVICE, layout.QUERY_VIEWS), (layout.ITEM_SERVICE, layout.ITEM_VIEWS)):
        present = [views[name] for name in view_names if name in views]
        present += [views[name] for name in sorted(views) if name not in view_names  # per-TTL views of derived features
                    and any(name.startswith(f"{base}_ttl") for base in view_names)]
        if present:
            services[service_name] = FeatureService(name=service_name, features=present)
    return TowerDefinitions(entities=tuple(entities.values()), views=views, services=services)
