"""The Feast client of the platform: apply, materialize, point-in-time and online reads, the feature schema.

``import feast`` costs seconds, so it happens inside :class:`FeastFeatureStore` the first time Feast is needed.
Feast and DuckDB exceptions are translated here into the platform's errors.

Names (views, services, paths) come from ``tower_platform.datasets.layout``; the Feast objects from
``tower_platform.datasets.feast_definitions``, which reads the sources' schema.json. Feature names, list lengths,
shared vocabularies, the category feature and the elapsed-time features come from schema.json, written by the
ingestion from the dataset config.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from towers.features import FeatureSchema, FeatureSpec
from tower_platform.datasets import layout
from tower_platform.errors import ConfigError, NotFoundError, TowerError, UnavailableError
from tower_platform.timestamp import as_utc as _utc

ROW_ID = "row_id"
DEFAULT_LIST_LENGTH = 8  # padded length of an existing repository's list features unless the config gives one
ITEM_ID_VOCAB = layout.ITEM_ID_VOCAB


@dataclass(frozen=True)
class ApplyReport:
    entities: tuple[str, ...]
    views: tuple[str, ...]
    services: tuple[str, ...]
    deleted: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in self.__dict__.items()}


class FeastFeatureStore:
    """One Feast repository (``repo_dir``, definitions only) with its state under ``home_dir`` ($TOWER_HOME)."""

    def __init__(self, repo_dir: Path, *, home_dir: Path) -> None:
        self.repo_dir = Path(repo_dir).resolve()
        self.home_dir = Path(home_dir).resolve()
        self._store: Any = None
        self._schema: tuple[tuple[int, ...], dict[str, Any]] | None = None  # (file identity, schema.json)
        self._services: dict[str, Any] = {}  # name -> feast.FeatureService, looked up once per store

    # ----------------------------------------------------------------- sources written by the ingestion
    def source_schema(self) -> dict[str, Any]:
        """The sources' schema.json (views, list lengths, kind overrides, time range, fingerprint)."""
        path = layout.schema_path(self.home_dir)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise NotFoundError(f"No ingested dataset under {self.home_dir} ({path} is missing); run `towerctl data ingest` first.") from None
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._schema is not None and self._schema[0] == key:  # read again only when an ingestion rewrote it
            return self._schema[1]
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} cannot be read ({exc}); run `towerctl data ingest` again.") from exc
        self._schema = (key, schema)
        return schema

    def read_source(self, table: str) -> pa.Table:
        """One source table (``interactions``, ``item_profile``, ...) as written by the ingestion."""
        path = layout.source_path(self.home_dir, table)
        if not path.is_file():
            raise NotFoundError(f"Source table {path} is missing; run `towerctl data ingest` first.")
        try:
            return pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise UnavailableError(f"Source table {path} cannot be read ({exc}); run `towerctl data ingest` again.") from exc

    @property
    def external(self) -> dict[str, Any] | None:
        """The existing Feast repository the dataset config named (repo, services, join keys), or None."""
        path = layout.schema_path(self.home_dir)
        return self.source_schema().get("external") if path.is_file() else None

    @property
    def services(self) -> tuple[str, str]:
        """(query feature service, item feature service)."""
        external = self.external
        if external:
            return external["query_service"], external["item_service"]
        return layout.QUERY_SERVICE, layout.ITEM_SERVICE

    def data_time_range(self) -> tuple[datetime, datetime]:
        """(earliest source row, last event): the default window of a materialization."""
        time_range = self.source_schema()["time_range"]
        return (datetime.fromisoformat(time_range["sources_start"]), datetime.fromisoformat(time_range["last_event"]))

    # ----------------------------------------------------------------- Feast
    @property
    def feast(self) -> Any:
        """The feast.FeatureStore, built on first use from feature_store.yaml with ${TOWER_HOME} = home_dir."""
        if self._store is None:
            self._store = self._open()
        return self._store

    def _open(self) -> Any:
        import yaml
        from feast import FeatureStore
        from feast.repo_config import RepoConfig
        from pydantic import ValidationError

        external = self.external
        if external:  # an existing repository: used as it is, nothing of it is rewritten
            self.repo_dir = Path(external["repo"])
        yaml_path = self.repo_dir / "feature_store.yaml"
        if not yaml_path.is_file():
            raise ConfigError(f"Feature repository {self.repo_dir} has no feature_store.yaml; set TOWER_FEATURE_REPO to a Feast repository.")
        text = yaml_path.read_text(encoding="utf-8").replace("${TOWER_HOME}", str(self.home_dir))
        try:
            raw = yaml.safe_load(os.path.expandvars(text))
            config = RepoConfig(**raw)
        except (yaml.YAMLError, ValidationError, TypeError) as exc:
            raise ConfigError(f"{yaml_path} is not a valid Feast configuration ({exc}); fix the file.") from exc
        config.repo_path = self.repo_dir
        if not external:
            layout.feast_dir(self.home_dir).mkdir(parents=True, exist_ok=True)
        with _translated("open the Feast repository", self.repo_dir):
            return FeatureStore(config=config, repo_path=str(self.repo_dir))

    def apply(self) -> ApplyReport:
        """Register the definitions built from the sources' schema.json; removes views that no longer exist."""
        from tower_platform.datasets.feast_definitions import build_definitions

        self.source_schema()  # refuse to apply before anything was ingested
        if self.external:  # the repository's owners apply it; check that the two services exist
            with _translated("read the feature services", self.repo_dir):
                views = [p.name for name in self.services for p in self.feast.get_feature_service(name).feature_view_projections]
            return ApplyReport(entities=(), views=tuple(views), services=self.services, deleted=())
        definitions = build_definitions(self.home_dir)
        store = self.feast
        with _translated("apply the feature definitions", self.repo_dir):
            stale: list[Any] = [s for s in store.list_feature_services() if s.name not in definitions.services]
            stale += [v for v in store.list_feature_views() if v.name not in definitions.views]
            wanted_sources = {v.batch_source.name for v in definitions.views.values()}
            stale += [s for s in store.list_data_sources() if s.name not in wanted_sources]
            store.apply(definitions.objects, objects_to_delete=stale, partial=not stale)
        return ApplyReport(
            entities=tuple(e.name for e in definitions.entities),
            views=tuple(definitions.views),
            services=tuple(definitions.services),
            deleted=tuple(o.name for o in stale),
        )

    def materialize(self, start: datetime, end: datetime) -> None:
        """Load the latest row per entity with a timestamp in [start, end] into the online store."""
        if self.external:  # the repository's owners load its online store
            return
        start, end = _utc(start), _utc(end)
        if not start < end:
            raise ConfigError(f"Materialization window {start.isoformat()} .. {end.isoformat()} is empty; pass --start before --end.")
        with _translated("materialize features", self.repo_dir), redirect_stdout(sys.stderr):  # Feast prints progress
            self.feast.materialize(start_date=start, end_date=end)

    def historical_features(self, entity_df: Any, service_name: str) -> pa.Table:
        """Point-in-time features of a feature service for each entity row, one row out per row in.

        entity_df (pandas or Arrow): ``row_id``, the join keys and ``event_timestamp`` (features are taken as of that
        time: rows with timestamp <= it, within TTL). Returns Arrow sorted by ``row_id``, columns named
        ``<view>__<feature>``.
        """
        import pandas as pd

        frame = entity_df.to_pandas() if isinstance(entity_df, pa.Table) else pd.DataFrame(entity_df)
        if ROW_ID not in frame.columns or layout.TIMESTAMP_FIELD not in frame.columns:
            raise ConfigError(f"An entity dataframe for '{service_name}' needs columns '{ROW_ID}' and '{layout.TIMESTAMP_FIELD}'.")
        store, external = self.feast, self.external
        if external:
            from tower_platform.datasets.feast_repository import to_repository_keys

            frame = to_repository_keys(frame, external)
        with _translated(f"read historical features of '{service_name}'", self.repo_dir):
            service = store.get_feature_service(service_name)
            job = store.get_historical_features(entity_df=frame, features=service, full_feature_names=True)
            table = job.to_arrow()
        if external:
            from tower_platform.datasets.feast_repository import from_repository_keys

            table = from_repository_keys(table, external)
        table = table.take(pc.sort_indices(table, [(ROW_ID, "ascending")]))
        as_of = pc.cast(pc.cast(table.column(layout.TIMESTAMP_FIELD), pa.timestamp("us", tz="UTC")), pa.int64())
        return self._elapsed(table, as_of_seconds=as_of.to_numpy().astype("float64") / 1e6)

    def online_features(self, service_name: str, entity_rows: Sequence[Mapping[str, Any]]) -> dict[str, list]:
        """Latest materialized features of a feature service for each entity row (``{"user_id": "1"}``).

        The service is looked up once per store (Feast rebuilds its request plan for every new FeatureService
        object, ~30 ms); a long-lived process sees a re-applied service after opening a new store."""
        store, external = self.feast, self.external
        keys = {layout.USER_KEY: external["user_key"], layout.ITEM_KEY: external["item_key"]} if external else {}
        rows = [{keys.get(k, k): v for k, v in r.items()} for r in entity_rows]
        with _translated(f"read online features of '{service_name}'", self.repo_dir):
            service = self._services.get(service_name)
            if service is None:  # Feast caches a request's plan per FeatureService object: keep one per name
                service = self._services[service_name] = store.get_feature_service(service_name)
            response = store.get_online_features(features=service, entity_rows=rows, full_feature_names=True)
            columns = response.to_dict()
        for canonical, key in keys.items():
            if key in columns and key != canonical:
                columns[canonical] = columns.pop(key)
        now = datetime.now(UTC).timestamp()
        for name, unit in self.elapsed_features().items():
            if name in columns:
                columns[name] = [None if v is None else (now - float(v)) / unit for v in columns[name]]
        return columns

    def elapsed_features(self) -> dict[str, float]:
        """Features stored as the epoch seconds of a past interaction, read as the time elapsed since: name -> unit
        in seconds (an online read serves ``(now - stored) / unit``)."""
        return dict(self.source_schema().get("elapsed", {}))

    def _elapsed(self, table: pa.Table, *, as_of_seconds: Any) -> pa.Table:
        for name, unit in self.elapsed_features().items():
            if name in table.column_names:
                stored = pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)  # (n,) NaN = none
                index = table.column_names.index(name)
                table = table.set_column(index, name, pa.array((as_of_seconds - stored) / unit, pa.float64(), from_pandas=True))
        return table

    def item_corpus(self, as_of: datetime) -> pa.Table:
        """One row per item of the corpus (item_profile) with all item features as of ``as_of``."""
        external = self.external
        if external:
            from tower_platform.datasets.feast_repository import corpus_item_ids

            with _translated("list the items of the item service", self.repo_dir):
                item_ids = corpus_item_ids(self.feast, external, self.read_source(layout.INTERACTIONS))
        else:
            item_ids = pc.unique(self.read_source(layout.ITEM_PROFILE).column(layout.ITEM_KEY).combine_chunks())
        n = len(item_ids)
        entity = pa.table(
            {
                ROW_ID: pa.array(range(n), pa.int64()),
                layout.ITEM_KEY: item_ids,
                layout.TIMESTAMP_FIELD: pa.array([_utc(as_of)] * n, pa.timestamp("us", tz="UTC")),
            }
        )
        table = self.historical_features(entity, self.services[1])
        keep = [layout.ITEM_KEY] + [c for c in table.column_names if "__" in c and not is_snapshot_column(c)]
        table = table.select(keep)
        if self.source_schema().get("display"):  # shown to people (payload, recommend), never a tower input
            profile = self.read_source(layout.ITEM_PROFILE).select([layout.ITEM_KEY, layout.DISPLAY_FIELD])
            rows = pc.index_in(table.column(layout.ITEM_KEY), value_set=profile.column(layout.ITEM_KEY).combine_chunks())
            table = table.append_column(layout.DISPLAY_FIELD, profile.column(layout.DISPLAY_FIELD).combine_chunks().take(rows))
        return table

    def feature_schema(self) -> FeatureSchema:
        """The towers' feature schema from the applied feature services' Feast types.

        String -> categorical; Array(String) -> multi_categorical (max_len from the dataset config); integers and
        floats -> numeric; then the config's per-feature kind overrides. The item id is the item feature ``item_id``.
        """
        schema = self.source_schema()
        lengths: dict[str, int] = schema.get("list_lengths", {})
        overrides: dict[str, str] = schema.get("kind_overrides", {})
        vocab_groups: dict[str, str] = schema.get("vocab_groups", {})
        store = self.feast
        sides: dict[str, list[FeatureSpec]] = {"query": [], "item": []}
        with _translated("read the feature services", self.repo_dir):
            for side, service_name in zip(("query", "item"), self.services):
                service = store.get_feature_service(service_name)
                for projection in service.feature_view_projections:
                    for feature in projection.features:
                        if feature.name == layout.SNAPSHOT_FIELD:
                            continue
                        name = layout.full_name(projection.name_to_use(), feature.name)
                        kind = overrides.get(name, _kind_of(feature.dtype, name=name, service=service_name))
                        max_len = lengths.get(name) if kind == "multi_categorical" else None
                        if kind == "multi_categorical" and max_len is None and schema.get("external"):
                            max_len = DEFAULT_LIST_LENGTH  # an existing repository's list: feast.lengths overrides
                        if kind == "multi_categorical" and max_len is None:
                            raise ConfigError(f"Feature '{name}' is a list but the dataset config gives it no length; add it under features.")
                        sides[side].append(FeatureSpec(name=name, side=side, kind=kind, vocab_group=vocab_groups.get(name), max_len=max_len))  # type: ignore[arg-type]
        item_id = FeatureSpec(name=layout.ITEM_KEY, side="item", kind="categorical", vocab_group=ITEM_ID_VOCAB)
        category = schema.get("item_category")
        return FeatureSchema(
            query=tuple(sides["query"]),
            item=(item_id, *sides["item"]),
            user_id=layout.USER_KEY,
            item_id=layout.ITEM_KEY,
            item_category=category if any(f.name == category for f in sides["item"]) else None,
            metadata={
                "query_service": self.services[0],
                "item_service": self.services[1],
                "user_key": schema["external"]["user_key"] if schema.get("external") else layout.USER_KEY,
                "elapsed_features": self.elapsed_features(),
                "dataset": schema.get("dataset"),
                "source_fingerprint": schema.get("source_fingerprint"),
            },
        )


def is_snapshot_column(name: str) -> bool:
    """True for the ``<view>__snapshot_ts`` columns that carry feature-row timestamps (audit only)."""
    return name.endswith(f"__{layout.SNAPSHOT_FIELD}")


def _kind_of(dtype: Any, *, name: str, service: str) -> str:
    from feast.types import Array, Float32, Float64, Int32, Int64, String

    if dtype == String:
        return "categorical"
    if isinstance(dtype, Array) and dtype.base_type == String:
        return "multi_categorical"
    if dtype in (Int32, Int64, Float32, Float64):
        return "numeric"
    raise ConfigError(
        f"Feature '{name}' of feature service '{service}' has Feast type {dtype}, which the towers cannot take; "
        "declare it as String, Array(String), Int64 or Float64."
    )


@contextmanager
def _translated(action: str, repo_dir: Path) -> Iterator[None]:
    """Feast, DuckDB and SQLite exceptions -> platform errors naming the repository and the fix."""
    import sqlite3

    from feast.errors import FeastError, FeastObjectNotFoundException

    try:
        yield
    except TowerError:
        raise
    except FeastObjectNotFoundException as exc:
        raise ConfigError(f"Could not {action}: {exc}; run `towerctl features apply` (repository {repo_dir}).") from exc
    except FeastError as exc:
        raise ConfigError(f"Could not {action} in {repo_dir}: {exc}; fix the feature repository and apply it again.") from exc
    except (sqlite3.Error, OSError) as exc:
        raise UnavailableError(f"Could not {action}: the Feast state is unavailable ({exc}); check $TOWER_HOME/feast.") from exc
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in {"duckdb", "_duckdb", "ibis", "pyarrow"}:
            raise UnavailableError(
                f"Could not {action}: the offline store failed ({type(exc).__name__}: {exc}); "
                "run `towerctl data ingest` and `towerctl features apply` again."
            ) from exc
        raise
