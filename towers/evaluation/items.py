"""The items of the fit data (ranked columns, popularity order for ties, head / torso / tail) and item categories.

The protocol is written out in ``docs/evaluation.md``. The popularity buckets are defined here once: head = the most
popular HEAD_SHARE of fit items (by fit count, ties by lower item code), tail = fit items with at most TAIL_MAX_COUNT
fit interactions, torso = the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from towers.errors import TowersInputError

HEAD_SHARE = 0.2  # head = the most popular 20% of fit items
TAIL_MAX_COUNT = 5  # tail = fit items with at most 5 fit interactions
POPULARITY_BUCKETS: tuple[str, ...] = ("head", "torso", "tail")


@dataclass(frozen=True, eq=False)
class FitItems:
    """The items of the fit data: the ranked columns, their popularity order and popularity buckets."""

    items: np.ndarray  # (F,) item codes, ascending: column j of a score matrix is items[j]
    counts: np.ndarray  # (F,) fit interactions per item
    column_of_item: np.ndarray  # (n_items,) column of each item code, -1 when not a fit item
    tie_position: np.ndarray  # (F,) position in the popularity order (count descending, then code ascending)
    bucket: np.ndarray  # (F,) int8: 0 head, 1 torso, 2 tail

    @classmethod
    def build(cls, item_codes: np.ndarray, *, n_items: int) -> FitItems:
        all_counts = np.bincount(np.asarray(item_codes, dtype=np.int64), minlength=n_items)  # (n_items,)
        items = np.flatnonzero(all_counts)
        if items.size == 0:
            raise TowersInputError("the fit data holds no interactions; choose fit periods that contain some")
        counts = all_counts[items]
        column_of_item = np.full(n_items, -1, dtype=np.int64)
        column_of_item[items] = np.arange(items.size)
        popularity_order = np.lexsort((items, -counts))  # (F,) most popular first
        tie_position = np.empty(items.size, dtype=np.int64)
        tie_position[popularity_order] = np.arange(items.size)
        n_head = int(round(HEAD_SHARE * items.size))
        bucket = np.where(counts <= TAIL_MAX_COUNT, 2, 1).astype(np.int8)
        bucket[tie_position < n_head] = 0
        return cls(items, counts, column_of_item, tie_position, bucket)

    def __len__(self) -> int:
        return int(self.items.shape[0])


@dataclass(frozen=True, eq=False)
class CategoryIndex:
    """Categories of each item code as CSR: item i belongs to names[codes[indptr[i]:indptr[i + 1]]]."""

    indptr: np.ndarray  # (n_items + 1,)
    codes: np.ndarray  # (nnz,) category codes
    names: tuple[str, ...]

    @classmethod
    def from_lists(cls, item_categories: Sequence[Sequence[str]]) -> CategoryIndex:
        """item_categories[i] lists the categories of item code i (empty when it has none)."""
        lengths = np.fromiter((len(c) for c in item_categories), dtype=np.int64, count=len(item_categories))
        flat = np.asarray([name for names in item_categories for name in names], dtype=object)
        names, codes = np.unique(flat.astype(str), return_inverse=True) if flat.size else (np.array([]), flat)
        indptr = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return cls(indptr, np.asarray(codes, dtype=np.int64), tuple(str(n) for n in names))

    @classmethod
    def coerce(cls, value: Any, *, n_items: int) -> CategoryIndex:
        index = value if isinstance(value, CategoryIndex) else None
        if index is None and isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], np.ndarray):
            indptr, codes, names = value
            index = cls(np.asarray(indptr, dtype=np.int64), np.asarray(codes, dtype=np.int64), tuple(names))
        if index is None:
            index = cls.from_lists(value)
        if index.indptr.shape[0] != n_items + 1:
            raise TowersInputError(
                f"item_categories covers {index.indptr.shape[0] - 1} items but the log has n_items={n_items}; "
                "give one entry per item code"
            )
        return index
