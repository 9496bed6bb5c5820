"""What every vector backend speaks: deterministic point ids, the stored point and search hit, and the interface.

Callers speak in item ids: a backend turns an item id into its point id (UUIDv5 of a fixed namespace and the item id),
so writing the same item twice overwrites one point instead of adding a second. :class:`VectorStore` is the one
interface of the two backends, :class:`~tower_platform.vectors.edge.EdgeVectorStore` (embedded, qdrant-edge) and
:class:`~tower_platform.vectors.store.QdrantVectorStore` (a Qdrant server through qdrant-client); the writer, the
verifier, promotion, serving and the monitor take either.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from tower_platform.errors import ConflictError, IntegrityError

POINT_ID_NAMESPACE = uuid.UUID("6f1c2a4e-3b8d-5e7f-9a0b-1c2d3e4f5a6b")
"""Fixed namespace of the point ids: never change it, or every collection written so far gets new ids."""

CATEGORY_FIELD = "category"
ITEM_ID_FIELD = "item_id"


def point_id(item_id: str) -> str:
    """The deterministic point id of an item: UUIDv5(POINT_ID_NAMESPACE, item_id) as a string."""
    return str(uuid.uuid5(POINT_ID_NAMESPACE, str(item_id)))


def aligned_batch(name: str, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Any]) -> np.ndarray:
    """The vectors of an upsert as float32 [N, D], after checking that ids, payloads and rows line up."""
    vectors = np.asarray(vectors, dtype=np.float32)  # [N, D]
    if vectors.ndim != 2 or len(ids) != vectors.shape[0] or len(payloads) != vectors.shape[0]:
        raise ConflictError(
            f"upsert into '{name}': {len(ids)} ids, {len(payloads)} payloads and vectors of shape "
            f"{vectors.shape} do not line up; pass one id, payload and row per item."
        )
    return vectors


class CollectionInfo(NamedTuple):
    point_count: int
    dimension: int
    distance: str  # "cosine" | "dot" | "euclid"


class StoredPoint(NamedTuple):
    item_id: str
    vector: np.ndarray | None  # [D] float32, None when retrieved without vectors
    payload: dict[str, Any]


class SearchHit(NamedTuple):
    item_id: str
    score: float
    payload: dict[str, Any]


class VectorPage(NamedTuple):
    """One page of a collection read column-wise: ``vectors[i]`` is the vector of ``item_ids[i]``."""

    item_ids: list[str]
    vectors: np.ndarray  # [P, D] float32
    payload: dict[str, list[Any]]  # field -> one value per point (None when a point lacks the field)


class VectorStore(Protocol):
    """The interface both vector backends provide (collections named ``<model>__v<N>``, item ids in and out)."""

    kind: str  # "edge" | "remote" | "memory"
    where: str  # the folder or URL, for messages

    def close(self) -> None: ...

    def __enter__(self) -> VectorStore: ...

    def __exit__(self, *exc_info: object) -> None: ...

    # collections
    def create_collection(self, name: str, *, dimension: int, distance: str = "cosine", bulk: bool = True) -> None: ...

    def finish_bulk_load(self, name: str) -> None: ...

    def collection_exists(self, name: str) -> bool: ...

    def collection_info(self, name: str) -> CollectionInfo: ...

    def delete_collection(self, name: str) -> None: ...

    def list_collections(self) -> list[str]: ...

    # points
    def upsert(self, name: str, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Mapping[str, Any]]) -> None:
        ...

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = True) -> list[StoredPoint]: ...

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]: ...

    def scroll(self, name: str, *, batch_size: int = 1024, with_vectors: bool = True) -> Iterator[list[StoredPoint]]:
        ...

    def scroll_vectors(self, name: str, *, fields: Sequence[str] = (), batch_size: int = 4096) -> Iterator[VectorPage]:
        ...

    def search(
        self,
        name_or_alias: str,
        vector: np.ndarray,
        *,
        limit: int,
        exclude_item_ids: Sequence[str] = (),
        category: str | None = None,
    ) -> list[SearchHit]: ...

    def check_index_recall(self, name: str) -> float | None: ...

    # aliases
    def aliases(self) -> dict[str, str]: ...

    def alias_target(self, alias: str) -> str | None: ...

    def swap_alias(self, alias: str, collection: str, *, previous: str | None) -> None: ...

    def delete_alias(self, alias: str) -> None: ...


def page_of(records: Sequence[Any], *, fields: Sequence[str], where: str) -> VectorPage:
    """A :class:`VectorPage` from engine records (``.payload`` a dict, ``.vector`` a list or a one-entry dict).

    The vectors of the page become one float32 matrix in one conversion; a record without a vector is refused.
    """
    ids: list[str] = []
    rows: list[Any] = []
    columns: dict[str, list[Any]] = {f: [] for f in fields}
    for record in records:
        payload = record.payload or {}
        raw = record.vector
        if isinstance(raw, Mapping):
            raw = next(iter(raw.values()), None)
        if raw is None:
            raise IntegrityError(
                f"vector collection {where}: point of item '{payload.get(ITEM_ID_FIELD)}' has no vector; "
                "delete the collection and write it again."
            )
        ids.append(str(payload.get(ITEM_ID_FIELD)))
        rows.append(raw)
        for field, column in columns.items():
            column.append(payload.get(field))
    matrix = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)  # [P, D]
    return VectorPage(item_ids=ids, vectors=matrix, payload=columns)
