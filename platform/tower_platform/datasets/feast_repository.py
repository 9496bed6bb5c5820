"""An existing Feast repository as the feature side: its own entities, views and feature services, nothing generated.

``ingest`` of a config with a ``feast:`` section reads only the interactions (the entity rows of training sets) into
``$TOWER_HOME/sources/interactions.parquet`` and records the repository in schema.json under ``external``;
:class:`tower_platform.features.FeastFeatureStore` then opens that repository's ``feature_store.yaml``, builds
point-in-time training sets and item corpora from its two feature services, serves with ``get_online_features`` of
its query service, and maps the canonical ``user_id`` / ``item_id`` columns to the repository's join keys. Nothing is
applied, materialized or written inside the repository: its owners keep doing that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tower_platform.datasets import layout
from tower_platform.datasets.config import DatasetConfig, TableSource, TimestampColumn
from tower_platform.datasets.table_reader import read_table
from tower_platform.datasets.timestamp import parse_timestamps
from tower_platform.errors import ConfigError, InputError



def repository_dir(config: DatasetConfig) -> Path:
    assert config.feast is not None and config.path is not None
    folder = (config.path.parent / config.feast.repo).resolve()
    if folder.is_file():
        folder = folder.parent  # the feature_store.yaml itself was named
    if not (folder / "feature_store.yaml").is_file():
        raise ConfigError(
            f"Dataset config {config.path}: key 'feast.repo' names {folder}, which has no feature_store.yaml; "
            "point it at the folder of an existing Feast repository."
        )
    return folder


def read_interactions(config: DatasetConfig, base_dir: Path) -> tuple[pa.Table, Path]:
    """The repository's interactions as canonical columns: user_id, item_id, event_timestamp, weight."""
    spec = config.feast
    assert spec is not None
    needed = [spec.user_key, spec.item_key, spec.timestamp, *([spec.weight] if spec.weight else [])]
    table, path = read_table(TableSource(path=spec.interactions), base_dir, key="feast.interactions", needed=needed,
                             config_path=config.path)

    def fail(problem: str, fix: str) -> InputError:
        return InputError(f"Dataset config {config.path}: key 'feast.timestamp', column '{spec.timestamp}' of {path}: {problem}; {fix}.")

    columns: dict[str, Any] = {}
    for canonical, column in ((layout.USER_KEY, spec.user_key), (layout.ITEM_KEY, spec.item_key)):
        values = pc.cast(table.column(column), pa.string()).combine_chunks()
        if values.null_count:
            raise InputError(f"Dataset config {config.path}: key 'feast.{canonical.replace('_id', '_key')}', column '{column}' "
                             f"of {path}: {values.null_count} rows have no id; fill or remove those rows.")
        columns[canonical] = values
    columns[layout.TIMESTAMP_FIELD] = parse_timestamps(table.column(spec.timestamp), TimestampColumn(column=spec.timestamp, format="iso8601"), fail=fail)
    weight = pc.cast(table.column(spec.weight), pa.float64()) if spec.weight else pa.array([1.0] * table.num_rows, pa.float64())
    columns["weight"] = pc.fill_null(weight, 1.0)
    return pa.table(columns), path


def external_metadata(config: DatasetConfig) -> dict[str, Any]:
    """schema.json entries of an existing repository: where it is, its services and keys, lengths, kinds, category."""
    spec = config.feast
    assert spec is not None
    return {
        "external": {
            "repo": str(repository_dir(config)),
            "query_service": spec.query_service,
            "item_service": spec.item_service,
            "user_key": spec.user_key,
            "item_key": spec.item_key,
        },
        "views": {},
        "list_lengths": dict(spec.lengths),
        "kind_overrides": dict(spec.kinds),
        "vocab_groups": {},
        "item_category": spec.item_category,
        "recent_items": None,
        "elapsed": {},
        "display": False,
    }


def to_repository_keys(frame: Any, external: dict[str, Any]) -> Any:
    """Canonical user_id / item_id columns of an entity dataframe renamed to the repository's join keys."""
    names = {layout.USER_KEY: external["user_key"], layout.ITEM_KEY: external["item_key"]}
    return frame.rename(columns={k: v for k, v in names.items() if k in frame.columns})


def from_repository_keys(table: pa.Table, external: dict[str, Any]) -> pa.Table:
    names = {external["user_key"]: layout.USER_KEY, external["item_key"]: layout.ITEM_KEY}
    return table.rename_columns([names.get(c, c) for c in table.column_names])


def corpus_item_ids(store: Any, external: dict[str, Any], interactions: pa.Table) -> pa.Array:
    """Items of the corpus: the join keys found in the item service's file sources, plus the interactions' items."""
    import pyarrow.dataset as ds

    ids = [interactions.column(layout.ITEM_KEY).combine_chunks()]
    service = store.get_feature_service(external["item_service"])
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        path = getattr(view.batch_source, "path", None)
        if not path:
            continue
        source = Path(path) if Path(path).is_absolute() else Path(external["repo"]) / path
        if source.exists():
            keys = ds.dataset(source, format="parquet").to_table(columns=[external["item_key"]]).column(0)
            ids.append(pc.cast(keys, pa.string()).combine_chunks())
    return pc.unique(pa.concat_arrays(ids)).drop_null()
