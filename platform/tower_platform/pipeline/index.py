"""Write and verify a version's item vectors, record its collection and mark the version indexed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.store import QdrantVectorStore

ITEM_TOWER = "item.onnx"


@dataclass(frozen=True)
class IndexedVersion:
    collection: str
    items: int
    written: int
    skipped: int
    items_per_s: float
    dimension: int
    distance: str
    sampled: int
    max_abs_diff: float
    status: str


def index_version(
    registry: SqlRegistryStore,
    vectors: QdrantVectorStore,
    corpus: pa.Table,
    *,
    model: str,
    version: int,
    actor: str,
    batch_size: int = 1024,
    progress: bool = True,
) -> IndexedVersion:
    """Embed the corpus with the version's item.onnx into ``<model>__v<N>``, verify it, record the collection and mark
    the version indexed. Safe to re-run: the writer resumes and upserts are idempotent. Never touches the alias."""
    from tower_platform.vectors.writer import QdrantEmbeddingWriter, verify_collection

    mv = registry.get_version(model, version)
    artifact = mv.artifact(ITEM_TOWER)
    writer = QdrantEmbeddingWriter(vectors, artifact.path, expected_sha256=artifact.sha256, batch_size=batch_size,
                                   progress=progress)
    written = writer.write(corpus, model=model, version=version)
    verified = verify_collection(vectors, tower=writer.tower, items=corpus)
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
    )
