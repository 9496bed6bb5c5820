"""A Feast offline store: Spark, reading the repository's parquet FileSources, with Arrow results typed as Feast's.

Feast's Spark store (0.67) answers the point-in-time questions of this project the way the rules ask (feature rows
with timestamp <= the entity row's timestamp, the latest one, ties broken by the created timestamp, TTL, every entity
row once) as long as nothing else differs. Three things do, and this subclass changes only those:

1. Sources. The stock store accepts only ``SparkSource`` (and Iceberg) and fails on the ``FileSource`` parquet views
   the repository defines. Each ``FileSource`` is handed to the stock code as the equivalent ``SparkSource``
   (same path, timestamp, created timestamp and field mapping; ``file_format="parquet"``), so the same definitions
   serve DuckDB and Spark.
2. Types. The stock ``to_arrow`` goes through pandas: integer features with nulls turn into float64, timestamps
   lose their time zone and lists become object columns, so values, types and the training set's fingerprint
   drift. This store converts Spark's result to Arrow directly and casts every column to the type Feast declares
   for it (``Int64``, ``Float64``, ``Array(String)``, ``UnixTimestamp`` as UTC microseconds).
3. The entity row key. The stock query identifies an entity row by ``CONCAT(keys..., CAST(ts AS STRING))``
   without a separator, and ``CAST(timestamp AS STRING)`` follows the session time zone and drops trailing zero
   microseconds. Rows asked as of ``event - 1 µs`` are then distinct only if the session time zone is fixed: the
   configuration sets ``spark.sql.session.timeZone: UTC`` (see ``feature_repo/spark/feature_store.yaml``).

Select it in feature_store.yaml::

    offline_store:
      type: tower_platform.spark_offline_store.TowerSparkOfflineStore
      spark_conf: {spark.master: "local[*]", spark.sql.session.timeZone: UTC}
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureView, FileSource
from feast.data_source import DataSource
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    SparkOfflineStore,
    SparkOfflineStoreConfig,
    SparkRetrievalJob,
    get_spark_session_or_start_new_with_repoconfig,
)
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.types import from_feast_to_pyarrow_type
from pydantic import StrictStr

_ENTITY_ROW = "__tower_entity_row"
_TIME = "__tower_time"
_KIND = "__tower_kind"  # 0 feature row, 1 entity row: at equal times feature rows sort first (timestamp <= entity time)
_FEATURE_TS = "__tower_feature_ts"
_CREATED_TS = "__tower_created_ts"
_MATCHED_TS = "__tower_matched_ts"


class TowerSparkOfflineStoreConfig(SparkOfflineStoreConfig):
    type: StrictStr = "tower_platform.spark_offline_store.TowerSparkOfflineStore"


class TowerSparkOfflineStore(SparkOfflineStore):
    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: Any,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        views = [_on_spark(fv) for fv in feature_views]
        types = _feature_types(views, feature_refs, full_feature_names=full_feature_names)
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        covered = (
            isinstance(entity_df, pd.DataFrame)
            and not odfvs
            and not filter_by_created_timestamp
            and all(isinstance(fv.batch_source, SparkSource) and fv.batch_source.path for fv in views)
        )
        if not covered:
            job = SparkOfflineStore.get_historical_features(
                config, views, feature_refs, entity_df, registry, project, full_feature_names, filter_by_created_timestamp, **kwargs
            )
            assert isinstance(job, SparkRetrievalJob)
            return TypedSparkRetrievalJob(
                spark_session=job.spark_session, query=job.query, full_feature_names=full_feature_names, config=config,
                on_demand_feature_views=job.on_demand_feature_views, metadata=job.metadata, feature_types=types,
            )
        assert isinstance(config.offline_store, SparkOfflineStoreConfig)
        spark = get_spark_session_or_start_new_with_repoconfig(config.offline_store)
        event_ts = offline_utils.infer_event_timestamp_from_entity_df(entity_schema=dict(zip(entity_df.columns, entity_df.dtypes)))
        frame = entity_df.copy()
        frame[event_ts] = pd.to_datetime(frame[event_ts], utc=True)
        frame[_ENTITY_ROW] = np.arange(len(frame), dtype=np.int64)
        entity_columns = [c for c in entity_df.columns]
        entity = spark.createDataFrame(frame)

        result = entity
        for fv in views:
            matched = _asof_join(spark, entity, fv, feature_refs, event_ts=event_ts, full_feature_names=full_feature_names)
            result = result.join(matched, on=_ENTITY_ROW, how="left")
        result = result.orderBy(_ENTITY_ROW).select(*entity_columns, *types)
        view_name = offline_utils.get_temp_entity_table_name()
        result.createOrReplaceTempView(view_name)
        return TypedSparkRetrievalJob(
            spark_session=spark,
            query=f"SELECT * FROM {view_name}",
            full_feature_names=full_feature_names,
            config=config,
            metadata=RetrievalMetadata(
                features=feature_refs,
                keys=list(set(entity_columns) - {event_ts}),
                min_event_timestamp=frame[event_ts].min().to_pydatetime(),
                max_event_timestamp=frame[event_ts].max().to_pydatetime(),
            ),
            feature_types=types,
        )

    @staticmethod
    def pull_latest_from_table_or_query(config: RepoConfig, data_source: DataSource, *args: Any, **kwargs: Any) -> RetrievalJob:
        return SparkOfflineStore.pull_latest_from_table_or_query(config, _spark_source(data_source), *args, **kwargs)

    @staticmethod
    def pull_all_from_table_or_query(config: RepoConfig, data_source: DataSource, *args: Any, **kwargs: Any) -> RetrievalJob:
        return SparkOfflineStore.pull_all_from_table_or_query(config, _spark_source(data_source), *args, **kwargs)


class TypedSparkRetrievalJob(SparkRetrievalJob):
    """A Spark retrieval whose Arrow result comes straight from Spark, each feature cast to its Feast type."""

    def __init__(self, *, feature_types: dict[str, pa.DataType], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._feature_types = feature_types

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        table = self.to_spark_df().toArrow()
        fields = [pa.field(f.name, self._feature_types.get(f.name, _utc(f.type))) for f in table.schema]
        return table.cast(pa.schema(fields))

    def _to_df_internal(self, timeout: int | None = None) -> Any:
        return self._to_arrow_internal(timeout).to_pandas()


def _feature_types(views: list[FeatureView], feature_refs: list[str], *, full_feature_names: bool) -> dict[str, pa.DataType]:
    """Output column -> Arrow type of its Feast dtype, for the requested features in request order."""
    types: dict[str, pa.DataType] = {}
    for fv in views:
        prefix = fv.projection.name_to_use()
        base = fv.projection.name_alias or fv.name
        requested = {ref.split(":", 1)[1] for ref in feature_refs if ref.startswith(f"{prefix}:")}
        for feature in fv.features:
            if feature.name in requested:
                types[f"{base}__{feature.name}" if full_feature_names else feature.name] = from_feast_to_pyarrow_type(feature.dtype)
    return types


def _asof_join(spark: Any, entity: Any, fv: FeatureView, feature_refs: list[str], *, event_ts: str, full_feature_names: bool) -> Any:
    """(entity row, requested features of ``fv``): the latest feature row of the key at or before the entity time.

    Entity rows and feature rows are put on one time line per key, feature rows first at equal times; a running
    ``last(feature time, ignorenulls)`` gives each entity row the time of its feature row, and an equi-join on
    (key, that time) fetches the values. Rows older than the TTL count as missing.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    source = fv.batch_source
    table = spark.read.parquet(source.path)
    for old_name, new_name in source.field_mapping.items():
        if old_name in table.columns:
            table = table.withColumnRenamed(old_name, new_name)
    prefix = fv.projection.name_to_use()
    base = fv.projection.name_alias or fv.name
    requested = [ref.split(":", 1)[1] for ref in feature_refs if ref.startswith(f"{prefix}:")]
    names = {feature: f"{base}__{feature}" if full_feature_names else feature for feature in requested}
    join_keys = fv.projection.join_key_map or {e.name: e.name for e in fv.entity_columns}
    keys = [f"__tower_key_{i}" for i in range(len(join_keys))]

    columns = [F.col(source_key).alias(k) for source_key, k in zip(join_keys, keys)]
    columns.append(F.col(source.timestamp_field).cast("timestamp").alias(_FEATURE_TS))
    created = source.created_timestamp_column
    columns.append((F.col(created).cast("timestamp") if created else F.lit(None).cast("timestamp")).alias(_CREATED_TS))
    columns += [F.col(feature).alias(out) for feature, out in names.items()]
    features = table.select(*columns).where(F.greatest(*[F.col(k).isNull() for k in keys]) == F.lit(False))
    latest_created = Window.partitionBy(*keys, _FEATURE_TS).orderBy(F.col(_CREATED_TS).desc_nulls_last())
    features = features.withColumn("__tower_rank", F.row_number().over(latest_created)).where("__tower_rank = 1").drop("__tower_rank", _CREATED_TS)

    entity_rows = entity.select(
        *[F.col(entity_key).alias(k) for entity_key, k in zip(join_keys.values(), keys)],
        F.col(event_ts).alias(_TIME),
        F.lit(1).alias(_KIND),
        F.col(_ENTITY_ROW),
    )
    feature_rows = features.select(*keys, F.col(_FEATURE_TS).alias(_TIME), F.lit(0).alias(_KIND), F.lit(None).cast("long").alias(_ENTITY_ROW))
    timeline = Window.partitionBy(*keys).orderBy(_TIME, _KIND).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    matched_ts = F.last(F.when(F.col(_KIND) == 0, F.col(_TIME)), ignorenulls=True).over(timeline)
    matched = entity_rows.unionByName(feature_rows).withColumn(_MATCHED_TS, matched_ts).where(F.col(_KIND) == 1)
    if fv.ttl and fv.ttl.total_seconds() > 0:
        fresh = F.col(_MATCHED_TS) >= F.col(_TIME) - F.make_dt_interval(secs=F.lit(int(fv.ttl.total_seconds())))
        matched = matched.withColumn(_MATCHED_TS, F.when(fresh, F.col(_MATCHED_TS)))
    m, f = matched.alias("m"), features.alias("f")
    on = [F.col(f"m.{k}") == F.col(f"f.{k}") for k in keys] + [F.col(f"m.{_MATCHED_TS}") == F.col(f"f.{_FEATURE_TS}")]
    return m.join(f, on=on, how="left").select(F.col(f"m.{_ENTITY_ROW}"), *[F.col(f"f.{out}") for out in names.values()])


def _utc(kind: pa.DataType) -> pa.DataType:
    return pa.timestamp("us", tz="UTC") if pa.types.is_timestamp(kind) else kind


def _spark_source(source: DataSource) -> DataSource:
    """The SparkSource reading the same parquet file as a FileSource; other sources unchanged."""
    if not isinstance(source, FileSource):
        return source
    return SparkSource(
        name=source.name,
        path=source.path,
        file_format="parquet",
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column,
        field_mapping=dict(source.field_mapping),
    )


def _on_spark(fv: FeatureView) -> FeatureView:
    if not isinstance(fv.batch_source, FileSource):
        return fv
    spark_view = copy.copy(fv)
    spark_view.batch_source = _spark_source(fv.batch_source)
    return spark_view
