"""Feast's Spark offline store, selected by configuration, builds the same training set as the default DuckDB store.

The Spark half runs PySpark in ``local[*]`` mode from ``feature_repo/spark/feature_store.yaml`` (the documented
variant); it needs Java and the ``spark`` extra and is skipped, with the reason, where either is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tower_platform.paths import packaged_feature_repo
from tower_platform.features.training_set import build_training_set

pytestmark = [
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java: install a JRE 17 (apt-get install openjdk-17-jre-headless)"),
    pytest.mark.skipif(importlib.util.find_spec("pyspark") is None, reason="pyspark is missing: pip install -e '.[spark]'"),
]

SPARK_REPO = packaged_feature_repo() / "spark"
DAY = 86_400
T = 1_600_000_000  # 2020-09-13 12:26:40 UTC
MOVIES = [("10", "Alpha (1990)", "Drama"), ("20", "Beta (1991)", "Comedy|Drama"), ("30", "Gamma (1992)", "Action"),
          ("40", "Delta (1993)", "Action")]  # fmt: skip
# user 1: 10 at T, 20 and 30 together at T + 60 s, 40 at T + 120 s.  user 2: 10 at T, then 20 ten days later.
RATINGS = [("1", "10", 4.0, T), ("1", "20", 3.0, T + 60), ("1", "30", 5.0, T + 60), ("1", "40", 2.0, T + 120),
           ("2", "10", 1.0, T), ("2", "20", 2.0, T + 10 * DAY)]  # fmt: skip


@pytest.fixture(scope="module")
def spark_session() -> Iterator[None]:
    """Stops the Spark session the store starts, once this module is done (the JVM is not left to later tests)."""
    yield
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def _spark_store(home: Path):
    from tower_platform.features.store import FeastFeatureStore

    return FeastFeatureStore(SPARK_REPO, home_dir=home)


def test_the_variant_selects_spark_in_local_mode(spark_session, tower_home):
    store = _spark_store(tower_home).feast
    offline = store.config.offline_store
    assert offline.type == "tower_platform.features.spark_offline_store.TowerSparkOfflineStore"
    assert offline.spark_conf["spark.master"] == "local[*]"
    assert offline.spark_conf["spark.sql.session.timeZone"] == "UTC"


def test_spark_builds_the_duckdb_training_set(spark_session, training_set, feature_store, bundled_dataset):
    spark_built = build_training_set(_spark_store(feature_store.home_dir), bundled_dataset)
    assert spark_built.table.schema == training_set.table.schema
    assert spark_built.table.column_names == training_set.table.column_names
    for name in training_set.table.column_names:  # one column at a time, so a failure names the column
        assert spark_built.table.column(name).equals(training_set.table.column(name)), name
    assert spark_built.audit == training_set.audit
    assert spark_built.fingerprint == training_set.fingerprint
    assert spark_built.schema == training_set.schema


def test_spark_keeps_the_point_in_time_rules_on_constructed_cases(spark_session, make_feature_home):
    from tower_platform.features.store import FeastFeatureStore

    # user_history expires after 1 day (TTL); user 1 has two interactions at the same second
    config, store = make_feature_home(ratings=RATINGS, movies=MOVIES, config_extra="features: {ttl_days: {user_history: 1}}\n")
    duckdb_built = build_training_set(store, config)
    spark_built = build_training_set(FeastFeatureStore(SPARK_REPO, home_dir=store.home_dir), config)
    rows = {(r["user_id"], r["item_id"]): r for r in spark_built.table.to_pylist()}
    assert spark_built.table.num_rows == len(RATINGS)
    assert rows[("1", "20")]["user_history__recent_items"] == ["10"]  # the snapshot stamped at its own event is not used
    assert rows[("1", "30")]["user_history__recent_items"] == ["10"]  # equal timestamps do not see each other
    assert rows[("1", "40")]["user_history__recent_items"] == ["30", "20", "10"]
    assert rows[("2", "20")]["user_history__recent_items"] is None  # beyond the TTL: kept, features null
    assert rows[("2", "20")]["item_stats__interaction_count"] == 1
    assert spark_built.table.equals(duckdb_built.table)
    assert spark_built.fingerprint == duckdb_built.fingerprint
