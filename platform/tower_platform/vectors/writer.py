"""The embedding writer: the whole item corpus through ``item.onnx`` into the collection ``<model>__v<N>``.

Points have deterministic ids (UUIDv5 of the item id, see :func:`tower_platform.vectors.points.point_id`), so a rerun
after a crash overwrites instead of duplicating; batches whose points are all present already are skipped. Payload:
``item_id``, ``category``, ``popularity`` (head / torso / tail from the corpus' interaction counts, the evaluation's
rule) and ``model_version``. After the last batch the writer finishes the bulk load (the embedded engine builds its
HNSW graph above ``exact_below`` points; a server restores its background indexing).

:func:`verify_collection` is the gate before a version becomes ``indexed``: point count and ids equal the corpus,
every stored vector is unit-norm (read back page by page), a sample of stored vectors equals freshly computed ones,
the collection's dimension and distance match the tower's metadata, and the embedded engine's graph finds at least
``recall_floor`` of the exact top-K (:meth:`check_index_recall`; RecallBelowFloorError names the figure and the
settings to raise).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tower_platform.datasets.layout import DISPLAY_FIELD
from tower_platform.errors import ConflictError, InputError, IntegrityError, NotFoundError
from tower_platform.naming import collection_name
from tower_platform.serving.onnx_tower import OnnxTower
from tower_platform.vectors.points import StoredPoint, VectorStore
from towers.progress import ProgressReporter

DISTANCE = "cosine"
NORM_TOLERANCE = 1e-4
PARITY_TOLERANCE = 1e-5


class ItemFeatureSource(Protocol):
    """Where item features come from: one row per item with the id column and the item tower's feature columns."""

    def item_corpus(self, as_of: datetime) -> Any:  # -> pyarrow.Table
        ...


@dataclass(frozen=True)
class StaticItemSource:
    """An item corpus already in memory (an Arrow table), for tests, benchmarks and pre-computed corpora."""

    table: Any

    def item_corpus(self, as_of: datetime) -> Any:
        return self.table


@dataclass(frozen=True)
class WriteReport:
    collection: str
    model: str
    version: int
    items: int
    written: int
    skipped: int  # items in batches already complete from an earlier run
    dimension: int
    distance: str
    seconds: float  # embedding and upserts
    build_seconds: float = 0.0  # finish_bulk_load: the embedded engine's HNSW graph (reported apart)

    @property
    def items_per_s(self) -> float:
        """Items written per second (embedding and upserts; the index build apart)."""
        return self.items / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class VerificationReport:
    collection: str
    model: str
    version: int
    point_count: int
    corpus_size: int
    dimension: int
    distance: str
    max_norm_error: float
    sampled: int
    max_abs_diff: float
    recall: float | None = None  # recall@K of the graph against exact search (None: not measured by this backend)


def popularity_buckets(counts: np.ndarray) -> np.ndarray:
    """head / torso / tail per item from interaction counts [N] (NaN -> 0), by the evaluation's rule
    (``towers.evaluation.HEAD_SHARE`` / ``TAIL_MAX_COUNT``, docs/evaluation.md): of the F items with at least one
    interaction, the round(HEAD_SHARE x F) most interacted are head (ties: corpus order); items with at most
    TAIL_MAX_COUNT interactions are tail; the rest torso.

    Example: counts [100, 50, 7, 3, 0] -> F = 4, head takes round(0.2 * 4) = 1 item (100); 50 and 7 are torso;
    3 and 0 tail. Items never interacted with are never head, however few items have interactions.
    """
    from towers.evaluation import HEAD_SHARE, TAIL_MAX_COUNT

    counts = np.nan_to_num(np.asarray(counts, dtype=np.float64), nan=0.0)  # [N]
    buckets = np.where(counts <= TAIL_MAX_COUNT, "tail", "torso").astype(object)  # [N]
    n_head = int(round(HEAD_SHARE * int(np.count_nonzero(counts > 0))))
    if n_head > 0:
        order = np.argsort(-counts, kind="stable")  # most interactions first, ties in corpus order
        buckets[order[:n_head]] = "head"
    return buckets


class QdrantEmbeddingWriter:
    """Writes the item vectors of one model version; safe to rerun after a crash (idempotent, resumable)."""

    def __init__(
        self,
        vectors: VectorStore,
        tower_path: str | Path,
        *,
        expected_sha256: str | None = None,
        batch_size: int = 1024,
        progress: bool = True,
        popularity_column: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.vectors = vectors
        self.tower = OnnxTower(tower_path, expected_sha256=expected_sha256, threads=threads)
        self.batch_size = int(batch_size)
        self.progress = progress
        self.popularity_column = popularity_column

    @property
    def collection(self) -> str:
        meta = self.tower.metadata
        return collection_name(meta.model_name, meta.model_version)

    def write(
        self,
        items: ItemFeatureSource | Any,
        *,
        as_of: datetime | None = None,
        model: str | None = None,
        version: int | None = None,
    ) -> WriteReport:
        """Embed every item of the corpus and upsert it; returns counts and timing."""
        meta = self.tower.metadata
        _check_identity(self.tower, model=model, version=version)
        corpus = _corpus(items, as_of=as_of)
        item_ids = _item_ids(corpus, meta.item_id_column, self.tower)
        payloads = self._payload_columns(corpus, len(item_ids))
        name = self.collection
        resuming = self._prepare_collection(name)  # a new collection has nothing to skip: no look-ups

        started = time.perf_counter()
        written = skipped = 0
        with ProgressReporter(f"writing {name}", total=len(item_ids), unit="items", enabled=self.progress) as progress:
            for start in range(0, len(item_ids), self.batch_size):
                batch_ids = item_ids[start : start + self.batch_size]
                if resuming and len(self.vectors.existing_ids(name, batch_ids)) == len(batch_ids):
                    skipped += len(batch_ids)  # complete from an earlier run
                else:
                    rows = corpus.slice(start, len(batch_ids))
                    embeddings = self.tower.run(self.tower.feeds(rows))  # [B, D]
                    self.vectors.upsert(name, batch_ids, embeddings, payloads.batch(start, len(batch_ids)))
                    written += len(batch_ids)
                progress.advance(len(batch_ids))
        seconds = time.perf_counter() - started
        self.vectors.finish_bulk_load(name)
        return WriteReport(
            collection=name,
            model=meta.model_name,
            version=meta.model_version,
            items=len(item_ids),
            written=written,
            skipped=skipped,
            dimension=meta.dimension,
            distance=DISTANCE,
            seconds=seconds,
            build_seconds=time.perf_counter() - started - seconds,
        )

    def _prepare_collection(self, name: str) -> bool:
        """Create the collection, or check an existing one; True when it existed (a rerun that may resume)."""
        meta = self.tower.metadata
        if not self.vectors.collection_exists(name):
            self.vectors.create_collection(name, dimension=meta.dimension, distance=DISTANCE, bulk=True)
            return False
        info = self.vectors.collection_info(name)
        if info.dimension != meta.dimension or info.distance != DISTANCE:
            raise ConflictError(
                f"collection '{name}' exists with dimension {info.dimension} and {info.distance} distance but model "
                f"'{meta.model_name}' version {meta.model_version} needs {meta.dimension} and {DISTANCE}; "
                "delete the collection and write it again."
            )
        return True

    def _payload_columns(self, corpus: Any, n_items: int) -> _PayloadColumns:
        """The payload fields as columns (one Python list each); the per-point dicts are built batch by batch."""
        meta = self.tower.metadata
        category_col = meta.item_category_column or _first_column(corpus, suffix="__category")
        columns: dict[str, list[Any]] = {
            "category": (
                corpus.column(category_col).to_pylist()
                if category_col and category_col in corpus.column_names
                else [None] * n_items
            )
        }
        popularity_col = self.popularity_column or _first_column(corpus, suffix="interaction_count")
        if popularity_col and popularity_col in corpus.column_names:
            counts = corpus.column(popularity_col).to_numpy(zero_copy_only=False).astype(np.float64)  # [N]
            columns["popularity"] = popularity_buckets(counts).tolist()
        else:
            columns["popularity"] = [None] * n_items
        if DISPLAY_FIELD in corpus.column_names:  # the dataset's display column (e.g. a title), shown to people
            columns[DISPLAY_FIELD] = corpus.column(DISPLAY_FIELD).to_pylist()
        return _PayloadColumns(columns, constants={"model_version": meta.model_version})


@dataclass(frozen=True)
class _PayloadColumns:
    """Payload fields held column-wise for the whole corpus; :meth:`batch` builds one batch's dicts."""

    columns: dict[str, list[Any]]
    constants: dict[str, Any]

    def batch(self, start: int, size: int) -> list[dict[str, Any]]:
        names = list(self.columns)
        slices = [self.columns[n][start : start + size] for n in names]
        fixed = self.constants
        return [{**dict(zip(names, values, strict=True)), **fixed} for values in zip(*slices, strict=True)]


def verify_collection(
    vectors: VectorStore,
    *,
    tower: OnnxTower | str | Path,
    items: ItemFeatureSource | Any,
    as_of: datetime | None = None,
    sample_size: int = 128,
    seed: int = 0,
    norm_tolerance: float = NORM_TOLERANCE,
    parity_tolerance: float = PARITY_TOLERANCE,
) -> VerificationReport:
    """Check a written collection against its tower and corpus; raise ConflictError / IntegrityError on a mismatch."""
    tower = tower if isinstance(tower, OnnxTower) else OnnxTower(tower)
    meta = tower.metadata
    name = collection_name(meta.model_name, meta.model_version)
    where = f"collection '{name}' of model '{meta.model_name}' version {meta.model_version}"
    if not vectors.collection_exists(name):
        raise NotFoundError(f"{where} does not exist; run `towerctl embeddings write {meta.model_name} "
                            f"--version {meta.model_version}`.")
    corpus = _corpus(items, as_of=as_of)
    item_ids = _item_ids(corpus, meta.item_id_column, tower)

    info = vectors.collection_info(name)
    if info.dimension != meta.dimension:
        raise ConflictError(f"{where} has dimension {info.dimension} but the tower's metadata says {meta.dimension}; "
                            "delete the collection and write it again.")
    if info.distance != DISTANCE:
        raise ConflictError(f"{where} uses {info.distance} distance, not {DISTANCE}; delete it and write it again.")
    if info.point_count != len(item_ids):
        raise IntegrityError(f"{where} holds {info.point_count} points but the corpus has {len(item_ids)} items; "
                             "rerun `towerctl embeddings write` (it resumes) or delete the collection and rewrite it.")

    stored_ids: list[str] = []
    max_norm_error = 0.0
    for page in vectors.scroll_vectors(name, batch_size=4096):  # one page of vectors in memory at a time
        errors = np.abs(np.linalg.norm(page.vectors.astype(np.float64), axis=1) - 1.0)  # [P]
        norm_error = float(errors.max(initial=0.0))
        if norm_error > norm_tolerance:
            worst = page.item_ids[int(np.argmax(errors))]
            raise IntegrityError(f"{where}: the vector of item '{worst}' has norm off by {norm_error:.2e} "
                                 "(not unit-norm); delete the collection and write it again.")
        max_norm_error = max(max_norm_error, norm_error)
        stored_ids.extend(page.item_ids)
    missing = sorted(set(item_ids) - set(stored_ids))
    if missing:
        raise IntegrityError(f"{where} lacks {len(missing)} corpus items (e.g. '{missing[0]}'); "
                             "rerun `towerctl embeddings write` to complete it.")

    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(item_ids), size=min(sample_size, len(item_ids)), replace=False))  # [S]
    sample_ids = [item_ids[i] for i in picks]
    fresh = tower.run(tower.feeds(corpus.take(picks)))  # [S, D]
    stored = {p.item_id: p for p in vectors.retrieve(name, sample_ids, with_vectors=True)}
    stored_matrix = _vectors_of([stored[i] for i in sample_ids], where=where)  # [S, D]
    diff = np.abs(stored_matrix - fresh).max(axis=1)  # [S]
    if diff.size and float(diff.max()) > parity_tolerance:
        worst = sample_ids[int(np.argmax(diff))]
        raise IntegrityError(f"{where}: the stored vector of item '{worst}' differs from a fresh computation by "
                             f"{float(diff.max()):.2e} (> {parity_tolerance:g}); it was tampered with or written by "
                             "another model file: delete the collection and write it again.")
    recall = vectors.check_index_recall(name)  # RecallBelowFloorError below the floor
    return VerificationReport(
        collection=name,
        model=meta.model_name,
        version=meta.model_version,
        point_count=info.point_count,
        corpus_size=len(item_ids),
        dimension=info.dimension,
        distance=info.distance,
        max_norm_error=max_norm_error,
        sampled=len(sample_ids),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        recall=recall,
    )


def _vectors_of(points: list[StoredPoint], *, where: str) -> np.ndarray:
    """The vectors of stored points as one [P, D] matrix; a point without a vector is an integrity failure."""
    empty = next((p.item_id for p in points if p.vector is None), None)
    if empty is not None:
        raise IntegrityError(f"{where}: item '{empty}' has no stored vector; delete the collection and write it again.")
    return np.stack([p.vector for p in points if p.vector is not None])  # [P, D]


def _check_identity(tower: OnnxTower, *, model: str | None, version: int | None) -> None:
    meta = tower.metadata
    if (model is not None and model != meta.model_name) or (version is not None and int(version) != meta.model_version):
        raise ConflictError(
            f"ONNX tower {tower.path} belongs to model '{meta.model_name}' version {meta.model_version}, "
            f"not '{model}' version {version}; check the artifacts of that version."
        )


def _corpus(items: Any, *, as_of: datetime | None) -> Any:
    import pyarrow as pa

    if isinstance(items, pa.Table):
        return items
    return items.item_corpus(as_of or datetime.now(UTC))


def _item_ids(corpus: Any, column: str, tower: OnnxTower) -> list[str]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in corpus.column_names:
        raise InputError(f"the item corpus for ONNX tower {tower.path.name} has no id column '{column}'; "
                         f"columns are {corpus.column_names}.")
    ids = pc.cast(corpus.column(column), pa.string())
    if ids.null_count:
        raise InputError(f"the item corpus has {ids.null_count} rows with no '{column}'; fix the item source.")
    if pc.count_distinct(ids).as_py() != len(ids):
        raise InputError(f"the item corpus repeats values of '{column}'; it must hold one row per item.")
    return ids.to_pylist()


def _first_column(corpus: Any, *, suffix: str) -> str | None:
    return next((c for c in corpus.column_names if c.endswith(suffix)), None)
