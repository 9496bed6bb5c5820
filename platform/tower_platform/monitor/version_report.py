"""The alignment report of a registered version: its collection and query tower in, a registry record out.

The thin I/O layer around :mod:`tower_platform.monitor.alignment`: read the served vectors (with their payload
category and popularity bucket) from the version's Qdrant collection, embed the test queries with the version's
``query.onnx``, compute the figures, compare them with the version named by ``against`` (production by default)
measured on the same queries (pooling the same small categories), find the breaches and store the report as the
version's next run.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from tower_platform.vectors.writer import popularity_buckets
from tower_platform.errors import ConflictError, InputError, UsageError
from tower_platform.monitor.alignment import CATEGORY, AlignmentFigures, ServedItems, alignment_figures
from tower_platform.monitor.inputs import MonitorInputs
from tower_platform.monitor.thresholds import MonitorThresholds, find_breaches
from tower_platform.registry.entities import ALIGNMENT_FIGURES, AlignmentReport, AlignmentSegment, ModelVersion

if TYPE_CHECKING:  # pragma: no cover
    from tower_platform.registry.store import SqlRegistryStore
    from tower_platform.vectors.store import QdrantVectorStore

PRODUCTION = "production"
CATEGORY_FIELD = "category"
POPULARITY_FIELD = "popularity"
SCROLL_PAGE = 4096


def read_served_items(vectors: QdrantVectorStore, collection: str, *, inputs: MonitorInputs) -> ServedItems:
    """Every point of ``collection`` with its vector, payload category and popularity bucket, read page by page into
    one matrix (:func:`tower_platform.vectors.reading.read_collection`).

    A point without a popularity bucket in its payload gets one from the training interaction counts (the embedding
    writer's rule, the evaluation's buckets).
    """
    from tower_platform.vectors.reading import read_collection

    contents = read_collection(vectors, collection, fields=(CATEGORY_FIELD, POPULARITY_FIELD), page_size=SCROLL_PAGE)
    if not len(contents):
        raise ConflictError(f"Qdrant collection '{collection}' is empty; run `towerctl embeddings write` first.")
    buckets = contents.payload[POPULARITY_FIELD]
    counts = inputs.interaction_counts(contents.item_ids)
    popularity = np.asarray(buckets, dtype=object)
    unset = pa.array(buckets, type=pa.string()).is_null().to_numpy(zero_copy_only=False)
    if unset.any():
        popularity[unset] = popularity_buckets(counts)[unset]
    return ServedItems(ids=contents.item_ids, vectors=contents.vectors,
                       categories=np.asarray(contents.payload[CATEGORY_FIELD], dtype=object),
                       popularity=popularity, interaction_counts=counts)


def measure_version(
    vectors: QdrantVectorStore, version: ModelVersion, *, inputs: MonitorInputs, k: int, min_items: int = 0,
    min_queries: int = 0, pooled: Collection[str] | None = None,
) -> AlignmentFigures:
    """The figures of one version: its collection's vectors and its query tower on the inputs' test queries
    (categories below ``min_items`` / ``min_queries`` pooled, or exactly those named by ``pooled``)."""
    from tower_platform.serving.onnx_tower import OnnxTower

    collection = _served_collection(version)
    items = read_served_items(vectors, collection, inputs=inputs)
    artifact = version.artifact("query.onnx")
    tower = OnnxTower(artifact.path, expected_sha256=artifact.sha256)
    queries = inputs.query_set(items.ids, embed=tower.embed)
    if len(queries) and queries.vectors.shape[1] != items.vectors.shape[1]:
        raise ConflictError(
            f"query.onnx of model '{version.model}' version {version.version} returns {queries.vectors.shape[1]}-d "
            f"vectors but collection '{collection}' holds {items.vectors.shape[1]}-d ones; re-export the version."
        )
    return alignment_figures(items, queries, k=k, min_items=min_items, min_queries=min_queries, pooled=pooled)


def with_deltas(segments: tuple[AlignmentSegment, ...], against: tuple[AlignmentSegment, ...]) -> tuple[AlignmentSegment, ...]:
    """Each segment with ``deltas[figure]`` = its value minus the same segment's value in ``against``."""
    theirs = {(s.kind, s.segment): s for s in against}
    out = []
    for ours in segments:
        other = theirs.get((ours.kind, ours.segment))
        deltas: dict[str, float | None] = {}
        for name in ALIGNMENT_FIGURES:
            a, b = ours.figure(name), other.figure(name) if other is not None else None
            deltas[name] = float(a) - float(b) if a is not None and b is not None else None
        out.append(replace(ours, deltas=deltas))
    return tuple(out)


def resolve_against(registry: SqlRegistryStore, model: str, version: int, against: str | int | None) -> ModelVersion | None:
    """The version to compare with: production (the default; None when it is ``version`` itself or there is none),
    a version number, or None for no comparison."""
    if against is None or against == "none":
        return None
    if against == PRODUCTION:
        production = registry.production_version(model)
        return production if production is not None and production.version != version else None
    try:
        number = int(against)
    except (TypeError, ValueError):
        raise UsageError(f"--against {against!r} is neither 'production' nor a version number of model '{model}'.") from None
    return None if number == version else registry.get_version(model, number)


def build_alignment_report(
    registry: SqlRegistryStore,
    vectors: QdrantVectorStore,
    *,
    model: str,
    version: int,
    inputs: MonitorInputs,
    thresholds: MonitorThresholds,
    actor: str,
    against: str | int | None = PRODUCTION,
    record: bool = True,
    echo: Callable[[str], None] = lambda _line: None,
) -> AlignmentReport:
    """Measure ``version``, compare it with ``against`` on the same test queries, find breaches; store it as the
    version's next run (``record``) and return it."""
    candidate = registry.get_version(model, version)
    echo(f"measuring {model} v{version} on {inputs.queries.num_rows:,} test interactions")
    figures = measure_version(vectors, candidate, inputs=inputs, k=thresholds.k, **thresholds.pooling())
    segments = figures.segments
    pooled = frozenset(s.segment for s in segments if s.kind == CATEGORY and s.pooled)
    compared = resolve_against(registry, model, version, against)
    if compared is not None:
        echo(f"measuring {model} v{compared.version} (compared) on the same queries")
        segments = with_deltas(segments, _compared_segments(registry, vectors, compared, inputs=inputs,
                                                            k=thresholds.k, pooled=pooled))
    breaches = find_breaches(segments, thresholds)
    report = AlignmentReport(
        model=model,
        version=version,
        run=0,
        k=figures.k,
        against_version=compared.version if compared is not None else None,
        collection=_served_collection(candidate),
        major_category=figures.major_category,
        n_items=figures.n_items,
        n_queries=figures.n_queries,
        n_skipped=figures.n_skipped,
        thresholds=thresholds.to_dict(),
        breaches=tuple(b.to_dict() for b in breaches),
        segments=segments,
        created_by=actor,
    )
    return registry.record_alignment_report(report, actor=actor) if record else report


def _compared_segments(
    registry: SqlRegistryStore, vectors: QdrantVectorStore, compared: ModelVersion, *, inputs: MonitorInputs, k: int,
    pooled: frozenset[str],
) -> tuple[AlignmentSegment, ...]:
    """The compared version on the same queries, with the candidate's pooled categories; when its query tower cannot
    read them (other features), its latest stored report with the same K (pooled as it was then)."""
    try:
        return measure_version(vectors, compared, inputs=inputs, k=k, pooled=pooled).segments
    except InputError:
        stored = [r for r in registry.alignment_reports(compared.model, version=compared.version) if r.k == k]
        if not stored:
            raise
        return stored[-1].segments


def _served_collection(version: ModelVersion) -> str:
    collection = version.collection
    if collection is None or collection.deleted_at is not None:
        raise ConflictError(
            f"Model '{version.model}' version {version.version} has no collection to measure; run "
            f"`towerctl embeddings write {version.model} --version {version.version}` first."
        )
    return collection.name
