"""Crash safety of ``towerctl embeddings write``: kill -9 at random points, then check nothing half-done can serve.

Production is version 1 (alias ``movies`` -> ``movies__v1``). ``embeddings write movies --version 2`` runs in a
subprocess on the embedded engine (qdrant-edge shards, its write-ahead log) and a SQLite registry and is killed with
SIGKILL at several random moments (between batches and inside one).
After every kill: version 2 is not indexed, promoting it is refused, the alias still points to version 1. A rerun
then completes the collection with one point per item, and only then can version 2 be promoted.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tower_platform.vectors.writer import QdrantEmbeddingWriter, verify_collection
from tower_platform.errors import ConflictError
from tower_platform.registry.artifact import file_sha256
from reference_tower import ReferenceFeature, build_reference_tower
from tower_platform.vectors.store import open_vector_store

N_ITEMS = 200
DIM = 16
KILLS = 3
GENRES = ("Action", "Comedy", "Drama")

RUNNER = textwrap.dedent(
    """
    import sys
    import pyarrow.parquet as pq
    from tower_platform.cli import embeddings
    from tower_platform.cli.main import app
    from tower_platform.vectors.writer import StaticItemSource
    from tower_platform.vectors.edge import EdgeVectorStore

    corpus = pq.read_table(sys.argv[1])
    embeddings.item_source = lambda settings: StaticItemSource(corpus)
    upsert = EdgeVectorStore.upsert

    def announced_upsert(self, *args, **kwargs):  # the test decides after each batch: go on, or be killed
        upsert(self, *args, **kwargs)
        print("upserted", flush=True)
        sys.stdin.readline()

    EdgeVectorStore.upsert = announced_upsert
    app(["embeddings", "write", "movies", "--version", "2", "--batch-size", str(BATCH)], prog_name="towerctl")
    """
).replace("BATCH", "10")


BUILD_RUNNER = textwrap.dedent(
    """
    import sys
    import pyarrow.parquet as pq
    from tower_platform.cli import embeddings
    from tower_platform.cli.main import app
    from tower_platform.vectors.writer import StaticItemSource
    from tower_platform.vectors.edge import EdgeVectorStore

    corpus = pq.read_table(sys.argv[1])
    embeddings.item_source = lambda settings: StaticItemSource(corpus)
    finish = EdgeVectorStore.finish_bulk_load

    def announced_finish(self, *args, **kwargs):  # every point is written: the test lets the graph build start
        print("building", flush=True)
        sys.stdin.readline()
        finish(self, *args, **kwargs)

    EdgeVectorStore.finish_bulk_load = announced_finish
    app(["embeddings", "write", "movies", "--version", "2"], prog_name="towerctl")
    """
)


def _corpus() -> pa.Table:
    idx = np.arange(N_ITEMS)
    return pa.table(
        {
            "item_id": pa.array([f"m{k}" for k in idx]),
            "item_profile__category": pa.array([GENRES[k % 3] for k in idx]),
            "item_stats__interaction_count": pa.array(idx.astype(np.float64)),
        }
    )


def _towers(folder, *, version: int):
    folder.mkdir(parents=True, exist_ok=True)
    features = [
        ReferenceFeature("item_id", "categorical", tuple(f"m{k}" for k in range(N_ITEMS))),
        ReferenceFeature("item_stats__interaction_count", "numeric"),
    ]
    schema = {"item_id": "item_id", "item_category": "item_profile__category"}
    paths = [
        build_reference_tower(folder / name, features=features, dimension=DIM, model_name="movies",
                              model_version=version, schema=schema, seed=version)
        for name in ("item.onnx", "query.onnx")
    ]
    spec = folder / "spec.json"
    spec.write_text("{}")
    return {p.name: (str(p), file_sha256(p)) for p in (*paths, spec)}


@pytest.fixture
def home(tmp_path):
    """TOWER_HOME in memory when the machine has /dev/shm: a SIGKILL loses no more than on disk (the page cache
    survives the process), and the test does not wait on a busy disk."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path / "home"
        return
    folder = Path(tempfile.mkdtemp(prefix="tower-crash-", dir=shm))
    try:
        yield folder / "home"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def deployment(home, tmp_path, monkeypatch):
    from tower_platform.registry.migration import upgrade_schema
    from tower_platform.registry.promotion import promote
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.settings import Settings

    home.mkdir()
    monkeypatch.setenv("TOWER_HOME", str(home))
    settings = Settings()
    upgrade_schema(settings.registry_url)
    corpus = _corpus()
    corpus_path = tmp_path / "corpus.parquet"
    pq.write_table(corpus, corpus_path)
    with SqlRegistryStore(settings.registry_url) as registry, open_vector_store(settings) as vectors:
        for version in (1, 2):
            registry.register_version(
                "movies", artifacts=_towers(settings.artifacts_dir / "movies" / f"v{version}", version=version),
                feature_service="movies_item", features=[], training_config={}, fingerprint="f" * 64,
                time_window=None, estimator_path=None, metrics={}, actor="test",
            )
        item_v1 = settings.artifacts_dir / "movies" / "v1" / "item.onnx"
        report = QdrantEmbeddingWriter(vectors, item_v1, progress=False).write(corpus)
        registry.record_collection("movies", 1, name=report.collection, point_count=report.items, dimension=DIM,
                                   distance="cosine", verified=True)
        registry.mark_indexed("movies", 1, actor="test")
        promote(registry, vectors, "movies", 1, actor="test")
    return settings, corpus, corpus_path


def _run_writer(corpus_path, tmp_path, *, kill_after_batches: int | None, delay_s: float = 0.0,
                runner: str = RUNNER) -> int:
    """Run the writer; with ``kill_after_batches``, SIGKILL it ``delay_s`` after it was let go past that many
    announcements (upserts for RUNNER, so the kill lands between batches or inside the next one)."""
    script = tmp_path / "run_writer.py"
    script.write_text(runner)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "writer.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(script), str(corpus_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
        )
        assert process.stdin is not None and process.stdout is not None
        announced = 0
        while process.stdout.readline():
            announced += 1
            if kill_after_batches is not None and announced >= kill_after_batches:
                if delay_s > 0:
                    process.stdin.write(b"go\n")
                    process.stdin.flush()
                    time.sleep(delay_s)
                os.kill(process.pid, signal.SIGKILL)
                break
            process.stdin.write(b"go\n")
            process.stdin.flush()
        process.stdout.close()
        process.stdin.close()
        return process.wait(timeout=300)


def _assert_not_servable(settings, corpus) -> int:
    """Version 2 is not indexed, promotion is refused, the alias is untouched; returns the points written so far."""
    from tower_platform.registry.promotion import promote
    from tower_platform.registry.store import SqlRegistryStore

    with SqlRegistryStore(settings.registry_url) as registry, open_vector_store(settings) as vectors:
        assert registry.get_version("movies", 2).status == "registered"
        with pytest.raises(ConflictError, match="version 2"):
            promote(registry, vectors, "movies", 2, actor="test")
        assert vectors.alias_target("movies") == "movies__v1"
        assert registry.production_version("movies").version == 1
        if not vectors.collection_exists("movies__v2"):
            return 0
        return vectors.collection_info("movies__v2").point_count


def test_killed_writer_leaves_nothing_promotable_and_a_rerun_completes(deployment, tmp_path):
    from tower_platform.registry.promotion import promote
    from tower_platform.registry.store import SqlRegistryStore

    settings, corpus, corpus_path = deployment
    seed = time.time_ns() % 1_000_000
    rng = random.Random(seed)  # random kill points; the seed is printed to replay a failure
    seen_counts = []
    for _ in range(KILLS):
        code = _run_writer(corpus_path, tmp_path, kill_after_batches=rng.randint(1, 3), delay_s=rng.choice([0.0, rng.uniform(0, 0.02)]))
        assert code == -signal.SIGKILL  # at most 4 of the 20 batches per run
        seen_counts.append(_assert_not_servable(settings, corpus))
        assert seen_counts[-1] <= N_ITEMS  # deterministic ids: never more points than items
    print(f"kill seed {seed}: points present after each kill: {seen_counts}")
    assert seen_counts == sorted(seen_counts) and seen_counts[-1] > 0  # each run resumes where the last stopped
    assert seen_counts[-1] < N_ITEMS

    assert _run_writer(corpus_path, tmp_path, kill_after_batches=None) == 0, (tmp_path / "writer.log").read_text()
    with SqlRegistryStore(settings.registry_url) as registry, open_vector_store(settings) as vectors:
        report = verify_collection(vectors, tower=settings.artifacts_dir / "movies/v2/item.onnx", items=corpus)
        assert report.point_count == N_ITEMS  # one point per item after several partial runs
        assert registry.get_version("movies", 2).status == "indexed"
        assert vectors.alias_target("movies") == "movies__v1"  # writing never moved the alias
        promote(registry, vectors, "movies", 2, actor="test")
        assert vectors.alias_target("movies") == "movies__v2"


def test_writer_killed_while_building_the_graph_leaves_nothing_promotable_and_a_rerun_builds_it(
    deployment, tmp_path, monkeypatch
):
    from tower_platform.registry.promotion import promote
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.settings import Settings

    settings, corpus, corpus_path = deployment
    monkeypatch.setenv("TOWER_EDGE__EXACT_BELOW", "50")  # 200 items: the writer builds an HNSW graph at the end
    seed = time.time_ns() % 1_000_000
    rng = random.Random(seed)
    delays = [rng.uniform(0.0, 0.05) for _ in range(2)]  # into the graph build (optimize) or just before it
    print(f"kill seed {seed}: delays {delays}")
    for delay in delays:
        code = _run_writer(corpus_path, tmp_path, kill_after_batches=1, delay_s=delay, runner=BUILD_RUNNER)
        assert code == -signal.SIGKILL
        assert _assert_not_servable(settings, corpus) == N_ITEMS  # every point was written before the build began

    assert _run_writer(corpus_path, tmp_path, kill_after_batches=None, runner=BUILD_RUNNER) == 0, (
        (tmp_path / "writer.log").read_text()
    )
    graphed = Settings()  # reads TOWER_EDGE__EXACT_BELOW
    with SqlRegistryStore(graphed.registry_url) as registry, open_vector_store(graphed) as vectors:
        assert vectors.indexed_count("movies__v2") == N_ITEMS  # the rerun built the whole graph
        report = verify_collection(vectors, tower=graphed.artifacts_dir / "movies/v2/item.onnx", items=corpus)
        assert report.point_count == N_ITEMS and report.recall is not None and report.recall >= 0.95
        assert registry.get_version("movies", 2).status == "indexed"
        promote(registry, vectors, "movies", 2, actor="test")
        assert vectors.alias_target("movies") == "movies__v2"
