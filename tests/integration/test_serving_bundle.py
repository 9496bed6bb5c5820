"""Serving from another service: `towerctl models serving-bundle` and `examples/serve_with_onnxruntime.py`.

A tiny model is trained on the session's bundled training set (refit off, 15 steps), exported as version 1 (promoted)
and as version 2 (indexed, not promoted), its vectors written into the embedded qdrant-edge store. The example runs
in a subprocess that cannot import `tower_platform` or `towers`, and must return the same top-10 as
`towerctl recommend`; once version 2 is promoted, version 1's bundle must be refused. The server path of the
example runs in this process against qdrant-client's in-memory mode holding the same vectors.

Tests run in file order: the last one promotes version 2.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "serve_with_onnxruntime.py"
TINY = {"epochs": 1, "max_steps": 15, "embedding_dim": 16, "output_dim": 16, "hidden_dims": [32], "batch_size": 512}
runner = CliRunner()

# Runs a script with `tower_platform`, `towers` and the repository's `feature_repo` made unimportable (as on a
# machine where only onnxruntime, Feast, qdrant-client/qdrant-edge and numpy are installed).
GUARD = textwrap.dedent(
    """
    import importlib.abc, runpy, sys
    BLOCKED = {"tower_platform", "towers", "feature_repo"}
    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None
    sys.meta_path.insert(0, Blocked())
    try:
        import tower_platform  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the import guard let tower_platform through")
    script, sys.argv = sys.argv[1], sys.argv[1:]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        if leaked:
            print(f"LEAKED {leaked}", file=sys.stderr)
    """
)


def _guarded(tmp: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOWER_")}  # nothing of the platform's settings
    return subprocess.run([sys.executable, "-c", GUARD, *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _invoke(*args: str):
    from tower_platform.cli.main import app

    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, tower_home, feature_store, training_set, bundled_dataset):
    """movies v1 (production) and v2 (indexed) on the session's Feast state; registry and vectors of their own."""
    from tower_platform.pipeline.config import tower_config_from
    from tower_platform.pipeline.export import export_version
    from tower_platform.pipeline.index import index_version
    from tower_platform.pipeline.register import register_export
    from tower_platform.pipeline.train import train_and_evaluate
    from tower_platform.registry.migration import upgrade_schema
    from tower_platform.registry.promotion import promote
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.settings import get_settings
    from tower_platform.vectors.edge import EdgeVectorStore

    work = tmp_path_factory.mktemp("serving")
    url = f"sqlite:///{work / 'registry.db'}"
    root = work / "vectors"
    upgrade_schema(url)
    trained = train_and_evaluate(training_set, feature_store, config=tower_config_from(bundled_dataset, overrides=TINY),
                                 refit=False, progress=False)
    corpus = feature_store.item_corpus(datetime.now(UTC))
    with SqlRegistryStore(url) as registry, EdgeVectorStore(root) as vectors:
        for version in (1, 2):  # the same weights exported twice: v2's vectors differ only in their version
            exported = export_version(trained, training_set, corpus, model="movies", version=version,
                                      artifacts_dir=work / "artifacts")
            register_export(registry, exported.folder, model="movies", actor="test")
            index_version(registry, vectors, corpus, model="movies", version=version, actor="test", progress=False)
        promote(registry, vectors, "movies", 1, actor="test")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOWER_DATABASE_URL", url)
        patch.delenv("TOWER_QDRANT__URL", raising=False)
        patch.setenv("TOWER_EDGE__PATH", str(root))  # the CLI's vector store: the embedded edge store at `root`
        get_settings.cache_clear()
        yield {"work": work, "url": url, "root": root, "training_set": training_set, "feature_store": feature_store,
               "trained": trained, "corpus": corpus}
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def bundle_v1(deployment) -> Path:
    out = deployment["work"] / "bundle-v1"
    result = _invoke("models", "serving-bundle", "movies", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["folder"] == str(out)
    return out


@pytest.fixture(scope="module")
def users(deployment) -> list[str]:
    """Two users for whom the exclusion matters (a recent item would be in their top 10 without it), the two most
    active users and the least active one, found by the platform's own pieces for every user at once."""
    import pyarrow.compute as pc

    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.serving.onnx_tower import OnnxTower
    from tower_platform.vectors.edge import EdgeVectorStore

    counts = pc.value_counts(deployment["training_set"].table.column("user_id").combine_chunks()).to_pylist()
    ranked = [str(c["values"]) for c in sorted(counts, key=lambda c: (-c["counts"], str(c["values"])))]
    with SqlRegistryStore(deployment["url"]) as registry:
        tower = OnnxTower(registry.get_version("movies", 1).artifact("query.onnx").path)
    rows = deployment["feature_store"].online_features("query_features", [{"user_id": u} for u in ranked])
    vectors = tower.embed({name: rows.get(name, ranked) for name in tower.input_names})  # [U, D]
    with EdgeVectorStore(deployment["root"]) as edge:
        unexcluded = edge.search_many("movies", vectors, limit=10)
    recent = rows["user_history__recent_items"]
    mattered = [u for u, r, hits in zip(ranked, recent, unexcluded, strict=True)
                if set(r or []) & {h.item_id for h in hits}]
    assert mattered, "for some user a recent item is among the top 10 without the exclusion"
    chosen = [*mattered[:2], *ranked[:2], ranked[-1]]
    return list(dict.fromkeys(chosen))


@pytest.fixture(scope="module")
def cli_top10(deployment, users, bundle_v1) -> dict[str, list[dict]]:
    """`towerctl recommend USER -k 11 --json` for each user, while version 1 is production (the eleventh hit tells
    whether the tenth place is a tie)."""
    results = {}
    for user in users:
        result = _invoke("recommend", user, "-k", "11", "--json")
        assert result.exit_code == 0, result.stderr
        body = json.loads(result.stdout)
        assert body["version"] == 1 and len(body["items"]) == 11
        results[user] = body["items"]
    return results


def _same_top10(ours: list[dict], theirs: list[dict]) -> None:
    """The same top 10 from lists of 11: equal scores rank by rank (1e-5), and the same items at every score.

    290 of the 9,742 items share their vector with another one (cold items with the same features), so equal scores
    occur; items of one score may come in any order, and a tie across the tenth place may be cut either way (the
    eleventh hit tells whether it is one). Otherwise the items must be the same, rank by rank.
    """
    assert len(ours) == len(theirs) == 11, (ours, theirs)
    a, b = [i["score"] for i in ours], [i["score"] for i in theirs]
    shown = [(i["item_id"], round(i["score"], 6)) for i in ours[:10]], [(i["item_id"], round(i["score"], 6))
                                                                         for i in theirs[:10]]
    assert all(abs(x - y) <= 1e-5 for x, y in zip(a[:10], b[:10])), shown
    start = 0
    for rank in range(1, 11):
        if rank == 10 or abs(b[rank] - b[rank - 1]) > 1e-5:  # ranks [start, rank) share one score
            boundary = rank == 10 and abs(b[10] - b[9]) <= 1e-5
            if not boundary:
                assert {i["item_id"] for i in ours[start:rank]} == {i["item_id"] for i in theirs[start:rank]}, shown
            start = rank


def test_the_bundle_holds_the_registered_tower_and_every_serving_fact(deployment, bundle_v1):
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.serving.onnx_tower import OnnxTower

    assert sorted(p.name for p in bundle_v1.iterdir()) == ["feature_store.yaml", "manifest.json", "query.onnx"]
    manifest = json.loads((bundle_v1 / "manifest.json").read_text())
    with SqlRegistryStore(deployment["url"]) as registry:
        recorded = registry.get_version("movies", 1).artifact("query.onnx").sha256
    assert manifest["files"]["query.onnx"]["sha256"] == recorded == hashlib.sha256(
        (bundle_v1 / "query.onnx").read_bytes()).hexdigest()
    assert manifest["files"]["feature_store.yaml"]["sha256"] == hashlib.sha256(
        (bundle_v1 / "feature_store.yaml").read_bytes()).hexdigest()
    assert (manifest["model"], manifest["version"]) == ("movies", 1)
    features = manifest["features"]
    assert features["feature_service"] == "query_features"  # a service to call, not the label query+item
    assert features["full_feature_names"] is True and features["entity_row"] == {"user_id": "<user id>"}
    assert "user_history__recent_items" in features["feature_names"]
    assert all("__" in name for name in features["feature_names"])  # full names only
    assert features["user_id_input"] == "user_id"  # DAT is on in the bundled config: the tower takes the id
    assert set(features["elapsed_features"]) == {"user_history__days_since_first"}
    assert features["elapsed_features"]["user_history__days_since_first"]["unit_seconds"] == 86400.0
    inputs = {i["name"]: i for i in manifest["query_tower"]["inputs"]}
    assert inputs["user_history__recent_items"]["padded_length"] == 20 and inputs["user_history__recent_items"][
        "pad_value"] == ""
    assert inputs["user_history__n_interactions"]["missing"] == "NaN"
    vectors = manifest["vectors"]
    assert (vectors["kind"], vectors["alias"], vectors["collection"], vectors["distance"]) == (
        "qdrant-edge", "movies", "movies__v1", "cosine")
    assert vectors["edge"]["alias_file"] == str(deployment["root"] / "aliases" / "movies")
    assert manifest["exclusion"]["feature"] == "user_history__recent_items"
    assert "k + len(value)" in manifest["exclusion"]["over_fetch"]
    assert manifest["version_check"] == {**manifest["version_check"], "payload_field": "model_version", "expected": 1}
    # the same facts in the tower file's own metadata_props, declared at export
    serving = OnnxTower(bundle_v1 / "query.onnx").metadata.serving
    assert serving.declared and serving.query_feature_service == "query_features"
    assert (serving.exclude_feature, serving.payload_version_field) == ("user_history__recent_items", "model_version")
    assert serving.elapsed_features == {"user_history__days_since_first": 86400.0}


def test_the_bundle_command_refuses_what_it_cannot_serve(deployment, bundle_v1):
    before = {p.name: p.read_bytes() for p in bundle_v1.iterdir()}
    again = _invoke("models", "serving-bundle", "movies", "--out", str(bundle_v1))
    assert again.exit_code == 2 and "exists and is not empty; pass --force" in again.stderr
    forced = _invoke("models", "serving-bundle", "movies", "--version", "1", "--out", str(bundle_v1), "--force")
    assert forced.exit_code == 0, forced.stderr
    after = {p.name: p.read_bytes() for p in bundle_v1.iterdir()}
    assert after["query.onnx"] == before["query.onnx"] and after["feature_store.yaml"] == before["feature_store.yaml"]
    assert not [p for p in bundle_v1.parent.iterdir() if p.name.startswith(".bundle-v1.")]  # no temp folders left

    dry = deployment["work"] / "dry"
    assert _invoke("models", "serving-bundle", "movies", "--out", str(dry), "--dry-run").exit_code == 0
    assert not dry.exists()

    from tower_platform.pipeline.export import export_version
    from tower_platform.pipeline.register import register_export
    from tower_platform.registry.store import SqlRegistryStore

    with SqlRegistryStore(deployment["url"]) as registry:  # version 3: registered, its vectors never written
        exported = export_version(deployment["trained"], deployment["training_set"], deployment["corpus"],
                                  model="movies", version=3, artifacts_dir=deployment["work"] / "artifacts")
        registered = register_export(registry, exported.folder, model="movies", actor="test")
    assert registered.status == "registered"
    refused = _invoke("models", "serving-bundle", "movies", "--version", str(registered.version),
                      "--out", str(deployment["work"] / "v3"))
    assert refused.exit_code == 4
    assert f"Version {registered.version} of model 'movies' is registered" in refused.stderr
    assert not (deployment["work"] / "v3").exists()


def test_the_feature_store_yaml_loads_with_feast_alone(deployment, bundle_v1, users, tmp_path):
    """The repository's own file needs tower_platform (custom offline store); the bundle's loads without it."""
    from tower_platform.paths import packaged_feature_repo

    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent(
        f"""
        import json, os, sys
        from feast import FeatureStore
        os.environ["TOWER_HOME"] = {str(deployment['feature_store'].home_dir)!r}
        try:
            FeatureStore(repo_path={str(packaged_feature_repo())!r})
            original = "loaded"
        except Exception as exc:
            original = type(exc).__name__
        store = FeatureStore(repo_path={str(bundle_v1)!r})
        service = store.get_feature_service("query_features")
        rows = store.get_online_features(features=service, entity_rows=[{{"user_id": {users[0]!r}}}],
                                         full_feature_names=True).to_dict()
        short = store.get_online_features(features=service, entity_rows=[{{"user_id": {users[0]!r}}}]).to_dict()
        print(json.dumps({{"original": original, "recent": rows["user_history__recent_items"][0],
                          "full": sorted(rows), "short": sorted(short)}}))
        """
    ))
    done = _guarded(tmp_path, str(script))
    assert done.returncode == 0, done.stderr
    assert "LEAKED" not in done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["original"] != "loaded"  # the shipped file names tower_platform's offline store class
    names = json.loads((bundle_v1 / "manifest.json").read_text())["features"]["feature_names"]
    assert set(names) <= set(report["full"])
    assert not set(names) & set(report["short"])  # Feast's default short names match none of the tower's inputs
    online = deployment["feature_store"].online_features("query_features", [{"user_id": users[0]}])
    assert report["recent"] == online["user_history__recent_items"][0] and report["recent"]


def test_the_example_returns_the_top10_of_towerctl_recommend(deployment, bundle_v1, users, cli_top10, tmp_path):
    """Five users, two of them with a recent item that the exclusion keeps out of the top 10."""
    from tower_platform.vectors.edge import EdgeVectorStore

    assert len(users) >= 4
    store = deployment["feature_store"]
    for user in users:  # towerctl recommend never returns a recent item
        recent = set(store.online_features("query_features", [{"user_id": user}])["user_history__recent_items"][0] or [])
        assert not recent & {i["item_id"] for i in cli_top10[user]}

    with EdgeVectorStore(deployment["root"]) as holder:  # holds the v1 shard open while the example runs
        holder.indexed_count("movies__v1")
        done = _guarded(tmp_path, str(EXAMPLE), str(bundle_v1), *users, "-k", "11", "--json")
    assert done.returncode == 0, done.stderr
    assert "LEAKED" not in done.stderr
    body = json.loads(done.stdout)
    assert (body["model"], body["version"]) == ("movies", 1)
    assert [r["user_id"] for r in body["results"]] == users
    for result in body["results"]:
        _same_top10(result["items"], cli_top10[result["user_id"]])


def test_opening_a_held_shard_in_place_is_refused_with_a_clear_message(deployment, bundle_v1, users, tmp_path):
    from tower_platform.vectors.edge import EdgeVectorStore

    with EdgeVectorStore(deployment["root"]) as holder:
        holder.collection_info("movies__v1"), holder.indexed_count("movies__v1")  # opens (and holds) the shard
        done = _guarded(tmp_path, str(EXAMPLE), str(bundle_v1), users[0], "--edge-open", "in-place")
    assert done.returncode == 5, done.stderr
    assert "is held by another process" in done.stderr and "--edge-open copy" in done.stderr


def _example_module():
    spec = importlib.util.spec_from_file_location("serve_with_onnxruntime", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_the_example_on_a_qdrant_server_matches_and_refuses_a_moved_alias(deployment, bundle_v1, users, cli_top10):
    """The server path (qdrant-client, alias resolved by the server) in a long-lived process, on the in-memory mode."""
    import numpy as np

    from tower_platform.vectors.edge import EdgeVectorStore
    from tower_platform.vectors.store import QdrantVectorStore

    example = _example_module()
    server = QdrantVectorStore.memory()
    with EdgeVectorStore(deployment["root"]) as edge:
        for version in (1, 2):
            name = f"movies__v{version}"
            server.create_collection(name, dimension=16)
            for page in edge.scroll(name):
                server.upsert(name, [p.item_id for p in page], np.stack([p.vector for p in page]),
                              [p.payload for p in page])
    server.swap_alias("movies", "movies__v1", previous=None)
    manifest = example.load_manifest(bundle_v1)
    recommender = example.Recommender(manifest, example.QueryTower(bundle_v1, manifest),
                                      example.OnlineFeatures(bundle_v1, manifest),
                                      example.ServerVectors(server._client, "movies"))
    for user in users:
        _same_top10(recommender.recommend(user, k=11), cli_top10[user])
    server.swap_alias("movies", "movies__v2", previous="movies__v1")  # a promotion while the service runs
    with pytest.raises(example.VersionMismatch, match="now collection 'movies__v2'.* model_version 2, but this query "
                                                      "tower is version 1; refusing"):
        recommender.recommend(users[0], k=10)
    server.close()


def test_after_promoting_v2_the_v1_bundle_is_refused_and_the_v2_bundle_serves(deployment, bundle_v1, users, tmp_path):
    from tower_platform.registry.promotion import promote
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.edge import EdgeVectorStore

    with SqlRegistryStore(deployment["url"]) as registry, EdgeVectorStore(deployment["root"]) as vectors:
        promote(registry, vectors, "movies", 2, actor="test")
    refused = _guarded(tmp_path, str(EXAMPLE), str(bundle_v1), users[0])
    assert refused.returncode == 4, refused.stderr
    assert "model_version 2, but this query tower is version 1; refusing" in refused.stderr
    assert refused.stdout == ""

    bundle_v2 = deployment["work"] / "bundle-v2"
    assert _invoke("models", "serving-bundle", "movies", "--out", str(bundle_v2)).exit_code == 0
    assert json.loads((bundle_v2 / "manifest.json").read_text())["version"] == 2  # the production version now
    recommender = _example_module().Recommender.from_bundle(bundle_v2)  # the edge path, in this process
    try:
        served = recommender.recommend(users[0], k=11)
    finally:
        recommender.close()
    cli = json.loads(_invoke("recommend", users[0], "-k", "11", "--json").stdout)
    assert cli["version"] == 2
    _same_top10(served, cli["items"])
