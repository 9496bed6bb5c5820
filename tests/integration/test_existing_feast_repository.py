"""A Feast repository of its own (entities, views, services and names chosen here) drives `towerctl run` and
`recommend`; the platform trains and serves on exactly its two feature services and changes nothing in it."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

TINY = ["--set", "epochs=1", "--set", "max_steps=8", "--set", "embedding_dim=8", "--set", "output_dim=8",
        "--set", "hidden_dims=[16]", "--set", "batch_size=128"]
T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
REPO_PY = '''
from datetime import timedelta
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, Int64, String

shopper = Entity(name="shopper", join_keys=["shopper_ref"], value_type=ValueType.STRING)
article = Entity(name="article", join_keys=["article_ref"], value_type=ValueType.STRING)
shopper_stats = FeatureView(
    name="shopper_stats", entities=[shopper], ttl=timedelta(days=0),
    schema=[Field(name="visits", dtype=Int64), Field(name="home_store", dtype=String)],
    source=FileSource(name="shopper_src", path="{data}/shoppers.parquet", timestamp_field="ts"),
)
article_attrs = FeatureView(
    name="article_attrs", entities=[article], ttl=timedelta(days=0),
    schema=[Field(name="department", dtype=String), Field(name="price", dtype=Float64),
            Field(name="tags", dtype=Array(String))],
    source=FileSource(name="article_src", path="{data}/articles.parquet", timestamp_field="ts"),
)
shopper_v1 = FeatureService(name="shopper_v1", features=[shopper_stats])
catalogue_v1 = FeatureService(name="catalogue_v1", features=[article_attrs])
'''
STORE_YAML = """project: shop_features
provider: local
registry: {state}/registry.db
online_store: {{type: sqlite, path: {state}/online.db}}
offline_store: {{type: duckdb}}
entity_key_serialization_version: 3
"""
CONFIG = """name: shop
model: shop-recs
feast:
  repo: repo
  query_service: shopper_v1
  item_service: catalogue_v1
  user_key: shopper_ref
  item_key: article_ref
  interactions: data/orders.parquet
  timestamp: ordered_at
  item_category: article_attrs__department
  lengths: {article_attrs__tags: 2}
  kinds: {shopper_stats__visits: numeric}
split: {method: global_time, validation_quantile: 0.7, test_quantile: 0.85}
"""

runner = CliRunner()


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from feast import FeatureStore

    from tower_platform.settings import get_settings

    root = tmp_path_factory.mktemp("shop").resolve()
    data, repo, state = root / "data", root / "repo", root / "state"
    for folder in (data, repo, state):
        folder.mkdir()
    rng = np.random.default_rng(3)
    shoppers = [f"shopper {i}" for i in range(40)]
    articles = [f"artículo {i}" for i in range(60)]
    static = T0 - timedelta(days=1)
    pq.write_table(pa.table({"shopper_ref": shoppers, "ts": [static] * 40, "visits": rng.integers(1, 50, 40),
                             "home_store": [f"store {i % 4}" for i in range(40)]}), data / "shoppers.parquet")
    pq.write_table(pa.table({"article_ref": articles, "ts": [static] * 60, "department": [f"dept {i % 5}" for i in range(60)],
                             "price": rng.uniform(1, 100, 60), "tags": [[f"t{i % 3}", f"t{i % 7}"] for i in range(60)]}),
                   data / "articles.parquet")
    n = 600
    order_times = [T0 + timedelta(minutes=int(m)) for m in np.sort(rng.choice(60 * 24 * 20, n, replace=False))]
    pq.write_table(pa.table({"shopper_ref": [shoppers[i] for i in rng.integers(0, 40, n)],
                             "article_ref": [articles[i] for i in rng.integers(0, 50, n)],  # 10 articles never ordered
                             "ordered_at": pa.array(order_times, pa.timestamp("us", tz="UTC"))}), data / "orders.parquet")
    (repo / "definitions.py").write_text(REPO_PY.replace("{data}", str(data)))
    (repo / "feature_store.yaml").write_text(STORE_YAML.format(state=state))
    store = FeatureStore(repo_path=str(repo))  # the repository's owners apply and materialize it
    import importlib.util

    spec = importlib.util.spec_from_file_location("shop_definitions", repo / "definitions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    store.apply([module.shopper, module.article, module.shopper_stats, module.article_attrs, module.shopper_v1,
                 module.catalogue_v1])
    store.materialize(start_date=T0 - timedelta(days=2), end_date=datetime.now(timezone.utc))
    (root / "shop.yaml").write_text(CONFIG)
    before = _digest(repo)
    vectors_dir = Path(tempfile.mkdtemp(prefix="tower-vectors-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    lenient = root / "monitor-lenient.yaml"
    lenient.write_text("monitor:\n  min_coverage: 0.0\n  max_alignment_distance: 1.0\n  max_recall_drop: 1.0\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOWER_HOME", str(root / "home"))
        patch.setenv("TOWER_EDGE__PATH", str(vectors_dir))
        patch.setenv("TOWER_MONITOR_CONFIG", str(lenient))
        patch.delenv("TOWER_DATABASE_URL", raising=False)
        patch.delenv("TOWER_QDRANT__URL", raising=False)
        patch.delenv("TOWER_FEATURE_REPO", raising=False)
        get_settings.cache_clear()
        yield {"root": root, "repo": repo, "before": before, "config": root / "shop.yaml"}
    get_settings.cache_clear()
    shutil.rmtree(vectors_dir, ignore_errors=True)


def _invoke(*args: str):
    from tower_platform.cli.main import app

    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def run(shop):
    result = _invoke("run", "--config", str(shop["config"]), "--promote", "--json", *TINY)
    assert result.exit_code == 0, result.stderr + (repr(result.exception) if result.exception else "")
    return json.loads(result.stdout)


def test_run_trains_on_the_repositorys_services_and_changes_nothing_in_it(shop, run):
    assert run["model"] == "shop-recs" and run["promoted"] is True
    assert run["audit"]["passed"] is True and run["audit"]["rows_in"] == run["audit"]["rows_out"] == 600
    assert run["collection"]["items"] == 60  # the item service's articles, ordered or not
    spec = json.loads((Path(run["artifacts"]) / "spec.json").read_text())
    text = json.dumps(spec)
    for name in ("shopper_stats__visits", "shopper_stats__home_store", "article_attrs__department",
                 "article_attrs__price", "article_attrs__tags", "shopper_v1", "catalogue_v1"):
        assert name in text
    assert _digest(shop["repo"]) == shop["before"]


def test_recommend_serves_with_the_query_services_online_features(shop, run):
    result = _invoke("recommend", "shopper 3", "-k", "4", "--json")
    assert result.exit_code == 0, result.stderr
    items = json.loads(result.stdout)["items"]
    assert len(items) == 4 and all(item["item_id"].startswith("artículo ") for item in items)
    assert all(item["category"].startswith("dept ") for item in items)
    assert _digest(shop["repo"]) == shop["before"]
