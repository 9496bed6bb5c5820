"""Write and verify a version's item vectors, record its collection and mark the version indexed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from tower_platform.errors import ConflictError
from tower_platform.naming import production_alias

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.points import VectorStore

ITEM_TOWER = "item.onnx"


def _delete_for_rebuild(vectors: VectorStore, collection: str, *, model: str, version: int) -> None:
    if not vectors.collection_exists(collection):
        return
    if vectors.alias_target(production_alias(model)) == collection:
        raise ConflictError(
            f"collection '{collection}' of model '{model}' version {version} is served by the production alias "
            f"'{production_alias(model)}' and cannot be rebuilt in place; register and index a new version, promote "
            "it, then rebuild this one."
        )
    vectors.delete_collection(collection)


@dataclass(frozen=True)
class IndexedVersion:
    collection: str
    items: int
    written: int
    skipped: int
    items_per_s: float  # embedding and upserts, the index build apart
    dimension: int
    distance: str
    sampled: int
    max_abs_diff: float
    status: str
    recall: float | None = None  # recall@K of the embedded engine's graph against exact search (None: a server)
    build_s: float = 0.0  # the index build after the last batch (finish_bulk_load)
    verify_s: float = 0.0  # verification: count, ids, norms, parity sample, recall


def index_version(
    registry: SqlRegistryStore,
    vectors: VectorStore,
    corpus: pa.Table,
    *,
    model: str,
    version: int,
    actor: str,
    batch_size: int = 1024,
    progress: bool = True,
    rebuild: bool = False,
) -> IndexedVersion:
    """Embed the corpus with the version's item.onnx into ``<model>__v<N>`` (then build its index), verify it (count,
    norms, parity, the graph's recall against exact search), record the collection and mark the version indexed.
    Safe to re-run: the writer resumes and upserts are idempotent. Never touches the alias.

    ``rebuild`` deletes the version's collection first, so that it is written (and its graph built) again with the
    current index settings; refused for the collection the production alias serves.
    """
    from tower_platform.vectors.writer import QdrantEmbeddingWriter, verify_collection

    mv = registry.get_version(model, version)
    artifact = mv.artifact(ITEM_TOWER)
    writer = QdrantEmbeddingWriter(vectors, artifact.path, expected_sha256=artifact.sha256, batch_size=batch_size,
                                   progress=progress)
    if rebuild:
        _delete_for_rebuild(vectors, writer.collection, model=model, version=version)
    written = writer.write(corpus, model=model, version=version)
    began = time.perf_counter()
    verified = verify_collection(vectors, tower=writer.tower, items=corpus)
    verify_s = time.perf_counter() - began
    registry.record_collection(model, version, name=verified.collection, point_count=verified.point_count,
                               dimension=verified.dimension, distance=verified.distance, verified=True, actor=actor)
    indexed = registry.mark_indexed(model, version, actor=actor, reason="item vectors written and verified")
    return IndexedVersion(
        collection=written.collection,
        items=written.items,
        written=written.written,
        skipped=written.skipped,
        items_per_s=float(written.items_per_s),
        dimension=verified.dimension,
        distance=verified.distance,
        sampled=verified.sampled,
        max_abs_diff=float(verified.max_abs_diff),
        status=indexed.status,
        recall=verified.recall,
        build_s=round(written.build_seconds, 3),
        verify_s=round(verify_s, 3),
    )
