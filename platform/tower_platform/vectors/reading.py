"""Reading a whole collection back: one [N, D] matrix filled page by page, never a second copy of it.

The monitor scores every served item, so it needs every vector at once; at 1M items x 64 dimensions that matrix is
256 MB, and collecting pages to concatenate them afterwards would hold it twice. :func:`read_collection` allocates
the matrix once from the collection's point count and dimension, then copies each page (``scroll_vectors``, a few
thousand points) into its rows::

    contents = read_collection(store, "movies__v3", fields=("category", "popularity"))
    contents.vectors.shape  # (N, D) float32
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tower_platform.errors import ConflictError
from tower_platform.vectors.points import VectorStore

PAGE_SIZE = 4096


@dataclass(frozen=True, eq=False)
class CollectionContents:
    item_ids: np.ndarray  # (N,) str
    vectors: np.ndarray  # (N, D) float32, row i is the vector of item_ids[i]
    payload: dict[str, list[Any]]  # field -> (N,) values, None where a point lacks it

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


def read_collection(
    store: VectorStore, name: str, *, fields: tuple[str, ...] = (), page_size: int = PAGE_SIZE
) -> CollectionContents:
    """Every point of ``name``: ids, vectors (one preallocated matrix) and the payload ``fields``, in scroll order.

    ConflictError when the collection changes size while it is read (a writer is still running).
    """
    info = store.collection_info(name)
    matrix = np.empty((info.point_count, info.dimension), dtype=np.float32)  # (N, D), the only full copy
    ids: list[str] = []
    payload: dict[str, list[Any]] = {f: [] for f in fields}
    filled = 0
    for page in store.scroll_vectors(name, fields=fields, batch_size=page_size):
        rows = len(page.item_ids)
        if filled + rows > info.point_count:
            raise _changed(name, info.point_count)
        matrix[filled : filled + rows] = page.vectors
        filled += rows
        ids.extend(page.item_ids)
        for field in fields:
            payload[field].extend(page.payload[field])
    if filled != info.point_count:
        raise _changed(name, info.point_count)
    return CollectionContents(item_ids=np.asarray(ids, dtype=str), vectors=matrix, payload=payload)


def _changed(name: str, expected: int) -> ConflictError:
    return ConflictError(
        f"vector collection '{name}' changed while it was read (it held {expected:,} points when reading began); "
        "wait for `towerctl embeddings write` to finish and measure again."
    )
